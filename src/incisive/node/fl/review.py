"""Review a bundle before approving it (``incisive node policy review``): what it declares it reads and lets out,
its code, and what changed since the last version of the same bundle this node approved.

The review is of the bundle exactly as it would be approved (same files, same sha256: from the local registry or
downloaded from the platform and re-hashed here). Each review is recorded
(:func:`incisive.node.fl.approval.record_review`: ``<node>/bundle_reviews.json`` and the node's audit log), so
that approval can require one (policy ``require_review``) and records when the approved hash was reviewed. No
PyTorch or Flower import.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.syntax import Syntax

from incisive.common.errors import InputError
from incisive.federated.bundle import RegisteredBundle, bundle_digest, bundle_files, read_manifest
from incisive.federated.task import DECLARED_OUTPUTS
from incisive.node.fl.approval import approvals, local_bundle_path, policy_conflicts
from incisive.node.policy import load_policy

FIRST_VERSION = "first version of this bundle at this node"


def previous_approval(home: Path, name: str, version: str, digest: str) -> dict[str, Any] | None:
    """The last approval at this node of another version (or another hash) of the bundle ``name``."""
    return next((e for e in reversed(approvals(home))
                 if e["name"] == name and (e["version"], e["sha256"]) != (version, digest)), None)


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _files(root: Path) -> dict[str, bytes]:
    return {f.relative_to(root).as_posix(): f.read_bytes() for f in bundle_files(root)}


def _diff(old_ref: str, new_ref: str, old: dict[str, bytes], new: dict[str, bytes]) -> list[dict[str, Any]]:
    out = []
    for path in sorted(old.keys() | new.keys()):
        before, after = old.get(path), new.get(path)
        if before == after:
            continue
        status = "added" if before is None else "removed" if after is None else "changed"
        a, b = _text(before or b""), _text(after or b"")
        if a is None or b is None:
            lines = [f"binary file {path} {status}"]
        else:
            lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), f"{old_ref}/{path}",
                                              f"{new_ref}/{path}", lineterm=""))
        out.append({"path": path, "status": status, "lines": lines})
    return out


def build_review(home: Path, bundle: RegisteredBundle, source: str) -> dict[str, Any]:
    """Everything a reviewer needs about ``bundle`` as it would be approved here (``source``: registry or
    platform). JSON-ready; see docs/federated.md, *Review and approval*."""
    m = bundle.manifest
    if bundle_digest(bundle.path) != bundle.digest:
        raise InputError(f"{m.ref} changed while it was being reviewed")
    files = _files(bundle.path)
    inputs = m.inputs
    features = inputs.get("features") or []
    data: dict[str, Any] = {
        "name": m.name, "version": m.version, "kind": m.kind, "job_types": m.job_types, "params": m.params,
        "description": m.description, "sha256": bundle.digest, "source": source,
        "inputs": {"clinical_fields": [str(f) for f in features] if isinstance(features, list) else [str(features)],
                   "label": inputs.get("label"), "modalities": list(inputs.get("modalities") or []),
                   "catalogue": list(inputs.get("catalogue") or []), "store": inputs.get("store")},
        "outputs": {jt: {**{k: list(v) if isinstance(v, tuple) else v
                            for k, v in asdict(DECLARED_OUTPUTS[jt]).items()},
                         "lines": DECLARED_OUTPUTS[jt].describe()} for jt in m.job_types},
        "policy_conflicts": policy_conflicts(load_policy(home), m),
        "files": [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest(), "text": _text(b)}
                  for p, b in files.items()],
    }
    prev = previous_approval(home, m.name, m.version, bundle.digest)
    data["previous"], data["first_version"], data["diff"] = None, prev is None, []
    if prev is not None:
        old_path = local_bundle_path(home, m.name, prev["version"])
        intact = old_path.is_dir() and bundle_digest(old_path) == prev["sha256"]
        data["previous"] = {k: prev.get(k) for k in ("name", "version", "sha256", "approved_at", "reviewer")}
        data["previous"]["intact"] = intact
        if intact:
            data["diff"] = _diff(f"{m.name}:{prev['version']}", m.ref, _files(old_path), files)
    return data


def fetch_platform_bundle(home: Path, name: str, version: str, dest: Path) -> RegisteredBundle:
    """The bundle as the platform holds it (signed download into ``dest``, re-hashed here)."""
    from incisive.common import signing
    from incisive.node.agent_link import AgentSettings, SignedClient, agent_key_path
    from incisive.node.fl.supernodes import fetch_bundle
    from incisive.node.home import Node

    node = Node.open(home, check_schema=False)
    client = SignedClient(AgentSettings.load(node.home), signing.read_private_key(agent_key_path(node)))
    try:
        digest = fetch_bundle(client, name, version, dest)
    finally:
        client.close()
    manifest = read_manifest(dest)
    if (manifest.name, manifest.version) != (name, version):
        raise InputError(f"the platform sent {manifest.ref}, not {name}:{version}")
    return RegisteredBundle(manifest, digest, dest, "")


def _out(console: Console, text: str = "", style: str | None = None) -> None:
    console.out(text, style=style, highlight=False)


def render(data: dict[str, Any], console: Console) -> None:
    """The review for people: syntax-highlighted code and diff when ``console`` is a terminal, plain otherwise."""
    ref = f"{data['name']}:{data['version']}"
    source = "the platform" if data["source"] == "platform" else "the local registry"
    _out(console, f"Review of {ref} as it would be approved (from {source})", "bold")
    _out(console, f"sha256 {data['sha256']}")
    _out(console, "\nManifest", "bold")
    _out(console, f"  name {data['name']}, version {data['version']}, kind {data['kind']}")
    _out(console, f"  job types: {', '.join(data['job_types'])}")
    if data["description"]:
        _out(console, f"  description: {data['description']}")
    for key, value in data["params"].items():
        _out(console, f"  param {key} = {json.dumps(value)}")
    i = data["inputs"]
    _out(console, "\nDeclared inputs (what the node gives the bundle)", "bold")
    _out(console, f"  clinical fields ({len(i['clinical_fields'])}): {', '.join(i['clinical_fields']) or '-'}")
    _out(console, f"  label: {i['label'] or '-'}")
    _out(console, f"  modalities: {', '.join(i['modalities']) or '-'}")
    _out(console, f"  catalogue columns: {', '.join(i['catalogue']) or '-'}")
    if i["store"]:
        _out(console, f"  object store: {i['store']}")
    _out(console, "\nDeclared outputs (all the sandbox lets out)", "bold")
    for job_type, out in data["outputs"].items():
        _out(console, f"  {job_type}: {'; '.join(out['lines'])}")
    if data["policy_conflicts"]:
        _out(console, "\nConflicts with this node's policy (cannot be approved)", "bold red")
        for c in data["policy_conflicts"]:
            _out(console, f"  {c}", "red")
    else:
        _out(console, "\nNo conflict with this node's policy")
    for f in data["files"]:
        _out(console, f"\n── {f['path']} ({f['size']} bytes, sha256 {f['sha256']})", "bold")
        if f["text"] is None:
            _out(console, "  (binary file)")
        elif console.is_terminal:
            lexer = Syntax.guess_lexer(f["path"], f["text"])
            console.print(Syntax(f["text"], lexer, line_numbers=True, word_wrap=True))
        else:
            _out(console, f["text"].rstrip("\n"))
    _render_diff(data, console)
    if "reviewed" in data:
        r = data["reviewed"]
        _out(console, f"\nreview recorded: {r['reviewer']} at {r['reviewed_at']} (sha256 {r['sha256'][:12]})")


def _render_diff(data: dict[str, Any], console: Console) -> None:
    prev = data["previous"]
    if prev is None:
        _out(console, f"\n{FIRST_VERSION}", "bold")
        return
    old = f"{prev['name']}:{prev['version']}"
    _out(console, f"\nchanges against {old} (approved {prev['approved_at']} by {prev.get('reviewer') or '?'})",
         "bold")
    if not prev["intact"]:
        _out(console, f"  the approved copy of {old} at this node is missing or changed: no diff", "red")
    elif not data["diff"]:
        _out(console, "  no file changed")
    for d in data["diff"]:
        text = "\n".join(d["lines"])
        if console.is_terminal:
            console.print(Syntax(text, "diff", word_wrap=True))
        else:
            _out(console, text)

"""Bundles this node approved: ``<node>/approved_bundles.json``.

Approving copies the bundle into ``<node>/bundles/<name>/<version>/`` and records its sha256. The ClientApp
only ever imports code from that node-local copy, after re-hashing it and finding the hash approved, so a job
that names another hash (or a bundle changed after approval) is refused before any data is read.

A bundle whose declared inputs (manifest ``inputs``) the node's policy withholds (``withheld_fields``,
``bundle_modalities``) cannot be approved, and once the policy tightens, :func:`bundle_refusal` (and so
:func:`verified_local_bundle`) refuses jobs with an approved one. Each approval records who approved it and when
its sha256 was reviewed (``incisive node policy review``, :mod:`incisive.node.fl.review`); approving, revoking
and reviewing are written to the node's audit log.
"""

from __future__ import annotations

import getpass
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from incisive.common.audit_log import NodeAudit
from incisive.common.errors import ConfigError, InputError
from incisive.common.fsio import atomic_write_text
from incisive.federated.bundle import Manifest, RegisteredBundle, bundle_digest, read_manifest
from incisive.node.policy import Policy, load_policy

APPROVALS = "approved_bundles.json"
REVIEWS = "bundle_reviews.json"


def _load(home: Path) -> list[dict[str, Any]]:
    path = home / APPROVALS
    if not path.exists():
        return []
    data: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def approvals(home: Path) -> list[dict[str, Any]]:
    return _load(home)


def local_bundle_path(home: Path, name: str, version: str) -> Path:
    return home / "bundles" / name / version


def os_user() -> str:
    """The operator's OS user name: who reviewed or approved when no name is given."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def node_id(home: Path) -> str:
    try:
        from incisive.common.settings import NodeSettings

        return str(NodeSettings.load(home).node_id)
    except Exception:  # the audit entry is written all the same
        return ""


def _declared(inputs: dict[str, Any], key: str) -> list[str]:
    value = inputs.get(key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def policy_conflicts(policy: Policy, manifest: Manifest) -> list[str]:
    """What the bundle declares it reads that this node's policy does not give to bundle code (field names and
    modality codes only: no PHI); empty when none."""
    inputs, out = manifest.inputs, []
    withheld = set(policy.withheld_fields)
    catalogue = set(_declared(inputs, "catalogue"))
    features, labels = _declared(inputs, "features"), _declared(inputs, "label")
    out += [f"declares clinical field {f!r}, which this node's policy withholds" for f in features if f in withheld]
    out += [f"declares label {x!r}, which this node's policy withholds" for x in labels if x in withheld]
    if withheld and "clinical_record.fields" in catalogue and not features:
        out.append("declares clinical_record.fields without naming them (inputs.features) while this node's "
                   "policy withholds some fields")
    if withheld and "clinical_record.labels" in catalogue and not labels:
        out.append("declares clinical_record.labels without naming them (inputs.label) while this node's "
                   "policy withholds some")
    if policy.bundle_modalities:
        allowed = ", ".join(policy.bundle_modalities)
        modalities = _declared(inputs, "modalities")
        out += [f"declares modality {m!r}, which this node's policy does not give to bundles (allowed: {allowed})"
                for m in modalities if m.upper() not in policy.bundle_modalities]
        pixels = "store" in inputs or catalogue & {"series.modality", "instance.object_hash"}
        if pixels and not modalities:
            out.append(f"declares pixel data without naming its modalities (inputs.modalities; allowed: {allowed})")
    return out


def reviews(home: Path) -> list[dict[str, Any]]:
    path = home / REVIEWS
    if not path.exists():
        return []
    data: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def last_review(home: Path, name: str, version: str, digest: str) -> dict[str, Any] | None:
    """The latest recorded review of exactly this bundle (name, version and sha256), or None."""
    return next((r for r in reversed(reviews(home))
                 if (r["name"], r["version"], r["sha256"]) == (name, version, digest)), None)


def record_review(home: Path, bundle: RegisteredBundle, source: str, reviewer: str | None = None) -> dict[str, Any]:
    m = bundle.manifest
    entry = {"name": m.name, "version": m.version, "sha256": bundle.digest, "reviewer": reviewer or os_user(),
             "reviewed_at": datetime.now(UTC).isoformat(timespec="seconds"), "source": source}
    atomic_write_text(home / REVIEWS, json.dumps([*reviews(home), entry], indent=2))
    NodeAudit(home).append("local", "bundle.review", target=m.ref, node=node_id(home),
                           details={"sha256": bundle.digest, "reviewer": entry["reviewer"], "source": source})
    return entry


def approve(home: Path, bundle: RegisteredBundle, share_inference_summary: bool = False,
            reviewer: str | None = None) -> dict[str, Any]:
    """Copy the bundle here and record its sha256 with who approved it; InputError when the bundle declares
    inputs the node's policy withholds, or the policy requires a review of this sha256 and there is none."""
    m = bundle.manifest
    reviewer = reviewer or os_user()
    policy = load_policy(home)
    conflicts = policy_conflicts(policy, m)
    if conflicts:
        raise InputError(f"{m.ref} cannot be approved at this node: {'; '.join(conflicts)}")
    reviewed = last_review(home, m.name, m.version, bundle.digest)
    if policy.require_review and reviewed is None:
        raise InputError(f"{m.ref} cannot be approved at this node: this node's policy requires a review of its "
                         f"sha256 first (incisive node policy review {m.ref})")
    target = local_bundle_path(home, m.name, m.version)
    tmp = target.with_name(f".{m.version}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(bundle.path, tmp)
    if bundle_digest(tmp) != bundle.digest:
        shutil.rmtree(tmp)
        raise InputError("bundle changed while it was being approved")
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    entries = [e for e in _load(home) if not (e["name"] == m.name and e["version"] == m.version)]
    entry = {"name": m.name, "version": m.version, "sha256": bundle.digest,
             "approved_at": datetime.now(UTC).isoformat(timespec="seconds"),
             "share_inference_summary": share_inference_summary, "reviewer": reviewer,
             "reviewed_at": reviewed["reviewed_at"] if reviewed else None}
    entries.append(entry)
    _save(home, entries)
    NodeAudit(home).append("local", "bundle.approve", target=m.ref, node=node_id(home),
                           details={"sha256": bundle.digest, "reviewer": reviewer,
                                    "reviewed_at": entry["reviewed_at"],
                                    "share_inference_summary": share_inference_summary})
    return entry


def revoke(home: Path, name: str, version: str) -> bool:
    entries = _load(home)
    kept = [e for e in entries if not (e["name"] == name and e["version"] == version)]
    _save(home, kept)
    shutil.rmtree(local_bundle_path(home, name, version), ignore_errors=True)
    if len(kept) != len(entries):
        NodeAudit(home).append("local", "bundle.revoke", target=f"{name}:{version}", node=node_id(home))
    return len(kept) != len(entries)


def _save(home: Path, entries: list[dict[str, Any]]) -> None:
    path = home / APPROVALS
    atomic_write_text(path, json.dumps(entries, indent=2))


def approval(home: Path, name: str, version: str) -> dict[str, Any] | None:
    return next((e for e in _load(home) if e["name"] == name and e["version"] == version), None)


def is_approved(home: Path, name: str, version: str, digest: str) -> bool:
    entry = approval(home, name, version)
    return entry is not None and entry["sha256"] == digest


def bundle_refusal(home: Path, name: str, version: str, digest: str) -> str | None:
    """Why a job with this bundle must be refused here, or None: not approved (this hash), the node-local copy
    missing or changed, or its declared inputs conflict with the node's policy as it is now (tightened after the
    approval). Call it before a job; the message names no PHI."""
    ref = f"{name}:{version}"
    if not is_approved(home, name, version, digest):
        return f"bundle {ref} ({digest[:12]}) is not approved at this node"
    path = local_bundle_path(home, name, version)
    if not path.is_dir() or bundle_digest(path) != digest:
        return f"the approved copy of bundle {ref} at this node is missing or changed"
    try:
        manifest = read_manifest(path)
    except InputError:
        return f"the approved copy of bundle {ref} at this node has an invalid manifest"
    try:
        conflicts = policy_conflicts(load_policy(home), manifest)
    except ConfigError:
        return "this node's policy file is invalid (incisive node policy show)"
    if conflicts:
        return f"bundle {ref} conflicts with this node's policy (changed since approval): {'; '.join(conflicts)}"
    return None


def verified_local_bundle(home: Path, name: str, version: str, digest: str) -> Path | None:
    """The node-local copy of an approved bundle whose files still hash to ``digest`` and whose declared inputs
    the node's policy still allows; else None (:func:`bundle_refusal` says why)."""
    if bundle_refusal(home, name, version, digest) is not None:
        return None
    return local_bundle_path(home, name, version)

"""The evidence pack (``incisive compliance pack --out evidence.zip``) for the project's privacy assessment.

One zip, everything as of now, each file's sha256 in ``manifest.json`` and ``SHA256SUMS`` (``sha256sum -c``):

```
ropa.json, ropa.html        the Art. 30 record, generated (ropa.pdf too with --pdf)
processors.json             the Art. 28 register; documents/<sha256>.pdf every filed contract and assessment
residency.json              node, backup targets, processors: EU/EEA or transfer + safeguard
check.json                  every finding (as `incisive compliance check --json`)
breaches.json, breaches/    the breach listing (counts, no UIDs) and each one's Art. 33(3) report (HTML), when installed
erasures.json               data-subject erasures (no identifiers), when the subjects workflow is installed
access.json                 who ran what on this node's data, from the whole audit chain (counts per actor)
readiness.json              the readiness check, run on this machine now (or the last recorded result)
backup.json                 backup verification state per target, RAID/ZFS health
audit.json                  the audit chain verified now (entries, problems, head)
deid.json                   the de-identification profile and options this node applies
```
Nothing in it is PHI: the record holds counts and names of categories, never a value about a person.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from incisive import __version__
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import InputError
from incisive.common.fsio import fsync_dir
from incisive.node.backup.health import backup_health
from incisive.node.backup.raid import raid_health
from incisive.node.compliance import store
from incisive.node.compliance.check import findings
from incisive.node.compliance.measures import deid_profile, last_readiness, run_readiness
from incisive.node.compliance.processors import list_processors
from incisive.node.compliance.render import render_ropa, to_pdf
from incisive.node.compliance.residency import residency
from incisive.node.compliance.ropa import build_ropa
from incisive.node.home import Node

__all__ = ["ACCESS_MODULE", "BREACH_MODULE", "FORMAT", "SUBJECTS_MODULE", "build_pack"]

FORMAT = "incisive.evidence/1"
BREACH_MODULE = "incisive.node.compliance.breach"
BREACH_REPORT_MODULE = "incisive.node.compliance.breach_report"
SUBJECTS_MODULE = "incisive.node.compliance.subjects"
ACCESS_MODULE = "incisive.node.compliance.access"


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()


def _optional(name: str) -> Any:
    """A sibling workflow module when it is installed (imported by name: it may import this package)."""
    return importlib.import_module(name) if importlib.util.find_spec(name) is not None else None


def _breaches(node: Node) -> dict[str, bytes]:
    """The breach workflow's records, when it is installed: its listing and each breach's Art. 33(3) report as
    HTML. Not the record files: they keep the affected studies' and series' (pseudonymised) UIDs so that a later
    update can recount the scope, and no UID goes into a pack that leaves the node (the counts do)."""
    breach, report = _optional(BREACH_MODULE), _optional(BREACH_REPORT_MODULE)
    if breach is None:
        return {}
    rows = [{k: v for k, v in r.items() if k != "scope"} for r in breach.list_breaches(node)]
    files: dict[str, bytes] = {"breaches.json": _json(rows)}
    for row in rows:
        if report is not None and row.get("status") != "unreadable":
            files[f"breaches/{row['id']}.html"] = report.render_html(report.report(node, row["id"])).encode()
    return files


def _subjects(node: Node) -> dict[str, bytes]:
    """Data-subject erasures (no identifiers) and the access report over the whole audit chain, when installed."""
    files = {}
    subjects, access = _optional(SUBJECTS_MODULE), _optional(ACCESS_MODULE)
    if subjects is not None:
        files["erasures.json"] = _json(subjects.erasures(node))
    if access is not None:
        files["access.json"] = _json(access.access_report(node, datetime(1970, 1, 1, tzinfo=UTC)))
    return files


def _documents(node: Node) -> tuple[dict[str, bytes], list[str]]:
    files, problems = {}, []
    for entry in store.load(node.home)["processors"]:
        for doc in entry["documents"]:
            problem = store.document_problem(node.home, doc)
            if problem:
                problems.append(f"{entry['name']}: {problem}")
                continue
            path = store.document_path(node.home, doc)
            files[f"documents/{path.name}"] = path.read_bytes()
    return files, problems


def _contents(node: Node, readiness: bool, pdf: bool) -> tuple[dict[str, bytes], list[str]]:
    report = run_readiness(node) if readiness else last_readiness(node)
    record = build_ropa(node)  # after the readiness run, so the record shows its result
    html = render_ropa(record)
    audit = NodeAudit(node.home)
    found = findings(node)
    files: dict[str, bytes] = {
        "ropa.json": _json(record),
        "ropa.html": html.encode(),
        "processors.json": _json(list_processors(node.home)),
        "residency.json": _json(residency(node)),
        "check.json": _json({"findings": [f.as_dict() for f in found],
                             "failing": sum(f.severity == "fail" for f in found)}),
        "readiness.json": _json(report if report is not None else {"recorded": False}),
        "backup.json": _json({"backup": backup_health(node.home), "raid": raid_health()}),
        "audit.json": _json({**audit.verify().as_dict(), "head": audit.head()}),
        "deid.json": _json(deid_profile(node)),
    }
    if pdf:
        with tempfile.TemporaryDirectory(prefix="incisive-pack-") as tmp:
            files["ropa.pdf"] = to_pdf(html, Path(tmp) / "ropa.pdf").read_bytes()
    documents, problems = _documents(node)
    files.update(documents)
    files.update(_breaches(node))
    files.update(_subjects(node))
    return files, problems


def build_pack(node: Node, out: Path, readiness: bool = True, pdf: bool = False) -> dict[str, Any]:
    """Write the evidence zip to ``out`` (replaced atomically); returns its manifest.

    ``readiness``: run the readiness check now (else include the last recorded result); ``pdf``: add ropa.pdf.
    """
    out = out.expanduser()
    if out.suffix.lower() != ".zip":
        raise InputError(f"--out {out.name}: the evidence pack is a .zip file")
    if out.is_dir() or not out.parent.is_dir():
        raise InputError(f"--out {out.name}: a file name in an existing directory")
    files, problems = _contents(node, readiness, pdf)
    now = datetime.now(UTC)
    manifest: dict[str, Any] = {
        "format": FORMAT, "generated_at": now.isoformat(timespec="seconds"), "tool_version": __version__,
        "node": {"id": node.settings.node_id, "provider": node.settings.provider},
        "files": [{"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                  for name, data in sorted(files.items())],
        "problems": problems,
    }
    sums = "".join(f"{f['sha256']}  {f['name']}\n" for f in manifest["files"])
    stamp = now.timetuple()[:6]
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in [*sorted(files.items()), ("manifest.json", _json(manifest)),
                               ("SHA256SUMS", sums.encode())]:
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o600 << 16
                zf.writestr(info, data)
            zf.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)
    return manifest

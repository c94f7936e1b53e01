"""Bundles this node approved: ``<node>/approved_bundles.json``.

Approving copies the bundle into ``<node>/bundles/<name>/<version>/`` and records its sha256. The ClientApp
only ever imports code from that node-local copy, after re-hashing it and finding the hash approved, so a job
that names another hash (or a bundle changed after approval) is refused before any data is read.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from incisive.common.errors import InputError
from incisive.common.fsio import atomic_write_text
from incisive.federated.bundle import RegisteredBundle, bundle_digest

APPROVALS = "approved_bundles.json"


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


def approve(home: Path, bundle: RegisteredBundle, share_inference_summary: bool = False) -> dict[str, Any]:
    m = bundle.manifest
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
             "share_inference_summary": share_inference_summary}
    entries.append(entry)
    _save(home, entries)
    return entry


def revoke(home: Path, name: str, version: str) -> bool:
    entries = _load(home)
    kept = [e for e in entries if not (e["name"] == name and e["version"] == version)]
    _save(home, kept)
    shutil.rmtree(local_bundle_path(home, name, version), ignore_errors=True)
    return len(kept) != len(entries)


def _save(home: Path, entries: list[dict[str, Any]]) -> None:
    path = home / APPROVALS
    atomic_write_text(path, json.dumps(entries, indent=2))


def approval(home: Path, name: str, version: str) -> dict[str, Any] | None:
    return next((e for e in _load(home) if e["name"] == name and e["version"] == version), None)


def is_approved(home: Path, name: str, version: str, digest: str) -> bool:
    entry = approval(home, name, version)
    return entry is not None and entry["sha256"] == digest


def verified_local_bundle(home: Path, name: str, version: str, digest: str) -> Path | None:
    """The node-local copy of an approved bundle whose files still hash to ``digest``; else None."""
    if not is_approved(home, name, version, digest):
        return None
    path = local_bundle_path(home, name, version)
    if not path.is_dir() or bundle_digest(path) != digest:
        return None
    return path

"""The platform's model registry: bundles (code archive, manifest, sha256) and trained models with provenance.

The database is the record; ``<platform>/fl/registry`` is an unpacked copy in the layout of
:class:`incisive.federated.bundle.Registry`, which the ServerApp reads (re-made from the archive when missing).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incisive.common.errors import InputError
from incisive.federated.archive import unpack
from incisive.federated.bundle import NAME_RE, VERSION_RE, RegisteredBundle, Registry, bundle_digest, read_manifest
from incisive.platform.errors import BadRequest, Conflict, NotFound
from incisive.platform.models import FlJob, ModelBundle, TrainedModel
from incisive.platform.services import audit, utcnow


def fl_home(platform_home: Path) -> Path:
    return platform_home / "fl"


def registry(platform_home: Path) -> Registry:
    return Registry(fl_home(platform_home) / "registry")


def bundle_dict(row: ModelBundle, trained: list[TrainedModel] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": row.name, "version": row.version, "ref": f"{row.name}:{row.version}",
                           "sha256": row.sha256, "kind": row.manifest.get("kind"),
                           "job_types": row.manifest.get("job_types"), "manifest": row.manifest,
                           "registered_by": row.registered_by, "registered_at": row.registered_at.isoformat(),
                           "archive_bytes": len(row.archive)}
    if trained is not None:
        out["trained"] = [trained_dict(t) for t in trained]
    return out


def trained_dict(row: TrainedModel) -> dict[str, Any]:
    return {"job": row.fl_job_id, "sha256": row.sha256, "bytes": len(row.weights), "provenance": row.provenance,
            "created_at": row.created_at.isoformat()}


def register(s: Session, archive: bytes, name: str, version: str, by: str) -> tuple[dict[str, Any], bool]:
    """Store a bundle archive after checking its manifest; (record, created). Same name+version with the same
    files is a no-op; with other files it is refused (bump the version)."""
    if not NAME_RE.match(name) or not VERSION_RE.match(version):
        raise BadRequest("invalid model name or version")
    try:
        with tempfile.TemporaryDirectory(prefix="incisive-bundle-") as tmp:
            path = unpack(archive, Path(tmp) / "bundle")
            manifest = read_manifest(path)
            digest = bundle_digest(path)
            raw = (path / "manifest.json").read_text(encoding="utf-8")
    except InputError as exc:
        raise BadRequest(str(exc)) from None
    if (manifest.name, manifest.version) != (name, version):
        raise BadRequest(f"name/version do not match the bundle manifest ({manifest.ref})")
    existing = s.scalar(select(ModelBundle).where(ModelBundle.name == name, ModelBundle.version == version))
    if existing is not None:
        if existing.sha256 != digest:
            raise Conflict(f"{manifest.ref} is already registered with another sha256; bump the version")
        return bundle_dict(existing), False
    row = ModelBundle(name=name, version=version, sha256=digest, manifest=json.loads(raw), archive=archive,
                      registered_by=by, registered_at=utcnow())
    s.add(row)
    s.flush()
    audit.append(s, by, "model.register", target=manifest.ref, details={"sha256": digest})
    return bundle_dict(row), True


def get(s: Session, name: str, version: str) -> ModelBundle:
    row = s.scalar(select(ModelBundle).where(ModelBundle.name == name, ModelBundle.version == version))
    if row is None:
        raise NotFound(f"model {name}:{version} is not registered")
    return row


def describe(s: Session, name: str, version: str) -> dict[str, Any]:
    row = get(s, name, version)
    trained = list(s.scalars(select(TrainedModel).where(TrainedModel.bundle_id == row.id)
                             .order_by(TrainedModel.created_at)))
    return bundle_dict(row, trained)


def list_bundles(s: Session) -> list[dict[str, Any]]:
    return [bundle_dict(r) for r in s.scalars(select(ModelBundle).order_by(ModelBundle.name, ModelBundle.version))]


def materialise(row: ModelBundle, platform_home: Path) -> RegisteredBundle:
    """The unpacked copy under the platform home (made from the archive when missing or changed)."""
    reg = registry(platform_home)
    try:
        bundle = reg.get(row.name, row.version)
        if bundle.digest == row.sha256:
            return bundle
    except InputError:
        pass
    shutil.rmtree(reg.root / row.name / row.version, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="incisive-bundle-") as tmp:
        bundle = reg.register(unpack(row.archive, Path(tmp) / "bundle"), row.name, row.version)
    if bundle.digest != row.sha256:
        raise Conflict("the stored bundle archive does not match its recorded sha256")
    return bundle


def add_trained(s: Session, job: FlJob, weights: bytes, provenance: dict[str, Any]) -> TrainedModel:
    row = TrainedModel(fl_job_id=job.id, bundle_id=job.bundle_id, weights=weights,
                       sha256=hashlib.sha256(weights).hexdigest(), provenance=provenance, created_at=utcnow())
    s.add(row)
    s.flush()
    return row


def trained(s: Session, job_id: str) -> TrainedModel:
    row = s.scalar(select(TrainedModel).where(TrainedModel.fl_job_id == job_id))
    if row is None:
        raise NotFound(f"job {job_id} has no trained model")
    return row

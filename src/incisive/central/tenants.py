"""Tenants of a Central Node: add, list, usage, quotas, and the provider's data exported back to it.

A tenant is a normal node home under ``<central>/tenants/<id>`` (:meth:`incisive.node.home.Node.init`) whose
settings say it is a tenant (``tenant_of``), where its sealed store's key ring is (``keyring``, outside the
tenant directory) and which master key unwraps it, that its door only verifies what the provider already
de-identified (``door = "verify"``), its AE titles and its quotas. Its catalogue is a SQLite file in its
directory or, on PostgreSQL, a schema ``tenant_<id>`` reached through ``search_path`` (Alembic's tables and
``alembic_version`` land in that schema; no tenant's connection sees another's).

Listings and usage are counts only (objects, bytes, last upload, key age), never data. An export gives the
provider its data back: the decrypted DICOM files, the clinical rows as CSV and a ``manifest.json`` with the
sha256 of every file, plus ``SHA256SUMS`` that ``sha256sum -c`` reads; :func:`verify_export` checks both.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from incisive.central.home import Central, tenant_schema
from incisive.central.registry import TenantRecord, utc_now
from incisive.central.settings import check_country
from incisive.common.audit_log import NodeAudit
from incisive.common.db import make_engine
from incisive.common.errors import InputError
from incisive.common.fsio import atomic_write_text
from incisive.common.keyring import KeyRing
from incisive.common.settings import CONFIG_NAME, NodeSettings
from incisive.node.api.tokens import create_token
from incisive.node.catalogue.models import ClinicalRecord, Instance, QuarantineItem, Series, Study
from incisive.node.home import Node, slugify

__all__ = ["EXPORT_FORMAT", "add_tenant", "export_tenant", "list_tenants", "set_quota", "usage", "verify_export"]

EXPORT_FORMAT = "incisive-tenant-export/1"
SUMS_NAME = "SHA256SUMS"
MANIFEST_NAME = "manifest.json"
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,55}")
_UID = re.compile(r"[0-9][0-9.]{0,63}")
Progress = Callable[[int, int], None]


def _check_ae(title: str, what: str) -> str:
    value = title.strip()
    if not 1 <= len(value) <= 16 or "\\" in value or any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise InputError(f"{what} {title[:20]!r} is not a DICOM AE title (1-16 printable ASCII characters, no '\\')")
    return value


def _derive_ae(tenant_id: str, taken: set[str]) -> str:
    base = tenant_id.upper()[:16]
    if base not in taken:
        return base
    for n in range(2, 1000):
        candidate = f"{base[:16 - len(str(n)) - 1]}-{n}"
        if candidate not in taken:
            return candidate
    raise InputError("no free AE title; pass --ae-title")


def add_tenant(central: Central, name: str, country: str, contact: str, quota_bytes: int | None = None,
               quota_instances: int | None = None, *, tenant_id: str | None = None, ae_title: str | None = None,
               allowed_aes: Iterable[str] = ()) -> tuple[TenantRecord, str]:
    """Create a tenant (node home, key ring, catalogue or schema, registry entry); (record, manager token).

    The manager token is returned once (only its hash is kept). Quotas ``None`` take the central defaults;
    0 means no limit. A tenant whose add was interrupted (state ``creating``) is cleaned up and created again.
    """
    if not name.strip():
        raise InputError("a tenant needs a name")
    tid = tenant_id or slugify(name)[:56].rstrip("-")
    if not _ID.fullmatch(tid):
        raise InputError("tenant id must be lower-case letters, digits and '-' (max 56)")
    country = check_country(country)
    aes = [_check_ae(a, "--allowed-ae") for a in allowed_aes]
    qb = central.settings.quota_bytes if quota_bytes is None else quota_bytes
    qi = central.settings.quota_instances if quota_instances is None else quota_instances
    if qb < 0 or qi < 0:
        raise InputError("quotas must be >= 0 (0 = no limit)")

    def reserve(records: dict[str, TenantRecord]) -> TenantRecord:
        old = records.get(tid)
        if old is not None and old.state != "creating":
            raise InputError(f"a tenant with id {tid!r} exists ({old.state}); pass another --id")
        taken = {r.ae_title for k, r in records.items() if k != tid and r.ae_title}
        title = _check_ae(ae_title, "--ae-title") if ae_title else _derive_ae(tid, taken)
        if title in taken:
            raise InputError(f"AE title {title!r} belongs to another tenant")
        record = TenantRecord(id=tid, name=name.strip(), country=country, contact=contact.strip()[:200],
                              created_at=utc_now(), state="creating", ae_title=title, allowed_aes=aes,
                              quota_bytes=qb, quota_instances=qi)
        records[tid] = record
        return record

    with central.registry.locked():
        stale = central.registry.get(tid)
        record = central.registry.update_unlocked(reserve)
    if stale is not None:
        _clean_partial(central, tid)
    try:
        token = _create(central, record)
    except BaseException:
        _clean_partial(central, tid)
        central.registry.update(lambda records: records.pop(tid, None))
        raise
    record = central.registry.set_state(tid, "active")
    central.audit.append("operator", "tenant.add", tid, node=tid,
                         details={"country": country, "ae_title": record.ae_title, "quota_bytes": qb,
                                  "quota_instances": qi})
    return record, token


def _create(central: Central, record: TenantRecord) -> str:
    tid = record.id
    url = central.tenant_catalogue_url(tid)
    if central.settings.catalogue_url:
        engine = make_engine(central.settings.catalogue_url)
        try:
            with engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{tenant_schema(tid)}"'))
        finally:
            engine.dispose()
    home = central.tenant_dir(tid)
    node = Node.init(home, provider=record.name, node_id=tid, catalogue_url=url)
    node.catalogue.dispose()
    KeyRing.create(central.ring_path(tid), tid, central.provider)
    _write_node_settings(home, tenant_of=str(central.dir), keyring=str(central.ring_path(tid)),
                         master_key=central.settings.master_key, door="verify", ae_title=record.ae_title,
                         allowed_aes=record.allowed_aes, quota_bytes=record.quota_bytes,
                         quota_instances=record.quota_instances)
    node = Node.open(home)
    try:
        token = create_token(node, "manager", "manager (tenant add)", tenant=tid)
    finally:
        node.catalogue.dispose()
    NodeAudit(home).append("operator", "tenant.created", tid, node=tid)
    return token


def _write_node_settings(home: Path, **values: Any) -> None:
    settings = NodeSettings.load(home).model_copy(update=values)
    atomic_write_text(home / CONFIG_NAME, settings.to_toml())


def _clean_partial(central: Central, tid: str) -> None:
    """Remove what an interrupted ``add`` left: the tenant dir, its ring, its schema (nothing was served)."""
    central.forget_node(tid)
    home = central.tenant_dir(tid)
    if home.exists():
        shutil.rmtree(home)
    central.ring_path(tid).unlink(missing_ok=True)
    if central.settings.catalogue_url:
        engine = make_engine(central.settings.catalogue_url)
        try:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{tenant_schema(tid)}" CASCADE'))
        finally:
            engine.dispose()


def list_tenants(central: Central, include_erased: bool = False) -> list[dict[str, Any]]:
    """Registry entries (no request bookkeeping), oldest first."""
    records = central.tenants(include_erased=include_erased)
    return [r.public() for r in sorted(records, key=lambda r: (r.created_at, r.id))]


def set_quota(central: Central, tenant_id: str, quota_bytes: int | None = None,
              quota_instances: int | None = None) -> TenantRecord:
    """Change a tenant's quotas (registry and its node's settings); ``None`` leaves one as it is."""
    record = central.tenant(tenant_id)
    if (quota_bytes is not None and quota_bytes < 0) or (quota_instances is not None and quota_instances < 0):
        raise InputError("quotas must be >= 0 (0 = no limit)")
    qb = record.quota_bytes if quota_bytes is None else quota_bytes
    qi = record.quota_instances if quota_instances is None else quota_instances
    _write_node_settings(central.tenant_dir(tenant_id), quota_bytes=qb, quota_instances=qi)
    central.forget_node(tenant_id)
    record = central.registry.set_state(tenant_id, "active", quota_bytes=qb, quota_instances=qi)
    central.audit.append("operator", "tenant.quota", tenant_id, node=tenant_id,
                         details={"quota_bytes": qb, "quota_instances": qi})
    return record


def _key_created(central: Central, tenant_id: str) -> str | None:
    """When the active data key was made, from the ring file (no key is unwrapped for this)."""
    try:
        doc = json.loads(central.ring_path(tenant_id).read_text())
        return next(str(k["created_at"]) for k in doc["keys"] if k["id"] == doc["active"])
    except (OSError, ValueError, KeyError, StopIteration):
        return None


def usage(central: Central, tenant_id: str | None = None) -> list[dict[str, Any]]:
    """Per active tenant (or only ``tenant_id``): objects, bytes, quarantined, last upload, key age, quotas —
    counts only, no data."""
    rows = []
    now = datetime.now(UTC)
    records = [central.tenant(tenant_id)] if tenant_id is not None else central.tenants()
    for record in sorted(records, key=lambda r: r.id):
        node = central.tenant_node(record.id)
        with node.catalogue.session() as s:
            count, size, last = s.execute(select(func.count(Instance.id), func.coalesce(func.sum(Instance.size), 0),
                                                 func.max(Instance.created_at))).one()
            quarantined = s.scalar(select(func.count(QuarantineItem.id))) or 0
        created = _key_created(central, record.id)
        age = None
        if created:
            age = round((now - datetime.fromisoformat(created)).total_seconds() / 86400, 1)
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        rows.append({"tenant": record.id, "name": record.name, "objects": int(count), "bytes": int(size),
                     "quarantined": int(quarantined),
                     "last_upload": last.isoformat(timespec="seconds") if last else None,
                     "key_created_at": created, "key_age_days": age,
                     "quota_bytes": record.quota_bytes, "quota_instances": record.quota_instances})
    return rows


# --- export ---------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _uid_part(uid: str) -> str:
    return uid if _UID.fullmatch(uid) else hashlib.sha256(uid.encode()).hexdigest()[:32]


def _clinical_csv(node: Node) -> tuple[str, int]:
    with node.catalogue.session() as s:
        records = list(s.scalars(select(ClinicalRecord).order_by(ClinicalRecord.pseudonym)))
    extra: list[str] = []
    for r in records:
        for key in [*(r.labels or {}), *(r.fields or {})]:
            if key not in extra:
                extra.append(key)
    columns = ["pseudonym", "diagnosis", "cancer_type", "age_band", "sex", *extra]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({"pseudonym": r.pseudonym, "diagnosis": r.diagnosis, "cancer_type": r.cancer_type,
                         "age_band": r.age_band, "sex": r.sex, **(r.fields or {}), **(r.labels or {})})
    return out.getvalue(), len(records)


def export_tenant(central: Central, tenant_id: str, to: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Write the tenant's data, decrypted, into ``to`` (new or empty) with a manifest; the manifest's summary."""
    central.tenant(tenant_id)
    to = to.expanduser().resolve()
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise InputError(f"{to} exists and is not empty; export into a new directory")
    if to.is_relative_to(central.dir):
        raise InputError("export outside the Central Node directory (the export holds decrypted data)")
    node = central.tenant_node(tenant_id)
    with node.catalogue.session() as s:
        instances = s.execute(select(Study.study_uid, Series.series_uid, Instance.sop_uid, Instance.object_hash)
                              .join(Series, Instance.series_id == Series.id).join(Study, Series.study_id == Study.id)
                              .order_by(Study.study_uid, Series.series_uid, Instance.sop_uid)).all()
        held = s.execute(select(QuarantineItem.sop_uid, QuarantineItem.object_hash)
                         .order_by(QuarantineItem.sop_uid)).all()
    jobs = [(node.store, f"dicom/{_uid_part(st)}/{_uid_part(se)}/{_uid_part(sop)}.dcm", h)
            for st, se, sop, h in instances]
    jobs += [(node.quarantine, f"quarantine/{_uid_part(sop)}.dcm", h) for sop, h in held]
    to.mkdir(mode=0o700, parents=True, exist_ok=True)
    files: dict[str, str] = {}
    total = len(jobs) + 1
    for number, (store, rel, address) in enumerate(jobs, 1):
        data = store.get(address)
        target = to / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        files[rel] = hashlib.sha256(data).hexdigest()
        if progress is not None:
            progress(number, total)
    text_csv, n_clinical = _clinical_csv(node)
    (to / "clinical.csv").write_text(text_csv, encoding="utf-8")
    files["clinical.csv"] = hashlib.sha256(text_csv.encode("utf-8")).hexdigest()
    if progress is not None:
        progress(total, total)
    summary = {"format": EXPORT_FORMAT, "tenant": tenant_id, "exported_at": utc_now(),
               "instances": len(instances), "quarantined": len(held), "clinical_records": n_clinical,
               "files": dict(sorted(files.items()))}
    atomic_write_text(to / SUMS_NAME, "".join(f"{h}  {rel}\n" for rel, h in sorted(files.items())))
    atomic_write_text(to / MANIFEST_NAME, json.dumps(summary, indent=1) + "\n")
    counts = {k: summary[k] for k in ("instances", "quarantined", "clinical_records")}
    NodeAudit(node.home).append("operator", "tenant.export", tenant_id, node=tenant_id, details=counts)
    central.audit.append("operator", "tenant.export", tenant_id, node=tenant_id, details=counts)
    return {k: v for k, v in summary.items() if k != "files"} | {"files": len(files), "to": str(to)}


def verify_export(directory: Path) -> dict[str, Any]:
    """Check every file of an export against ``manifest.json`` and ``SHA256SUMS``; ``problems`` lists what differs."""
    directory = directory.expanduser().resolve()
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
        if manifest.get("format") != EXPORT_FORMAT:
            raise ValueError
        listed: dict[str, str] = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{directory} has no readable {MANIFEST_NAME} of a tenant export") from None
    problems: list[str] = []
    sums: dict[str, str] = {}
    try:
        for line in (directory / SUMS_NAME).read_text(encoding="utf-8").splitlines():
            digest, _, rel = line.partition("  ")
            sums[rel] = digest
    except OSError:
        problems.append(f"{SUMS_NAME} is missing")
    if sums and sums != listed:
        problems.append(f"{SUMS_NAME} and {MANIFEST_NAME} disagree")
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    for rel in sorted(present - set(listed) - {MANIFEST_NAME, SUMS_NAME}):
        problems.append(f"{rel}: not in the manifest")
    for rel, digest in sorted(listed.items()):
        path = directory / rel
        if rel not in present or not path.resolve().is_relative_to(directory):
            problems.append(f"{rel}: missing")
        elif _sha256(path) != digest:
            problems.append(f"{rel}: sha256 differs")
    return {"files": len(listed), "ok": not problems, "problems": problems}


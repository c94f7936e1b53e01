"""Erasing a tenant: a crypto-shred, journaled, resumable after ``kill -9`` at any point.

The provider's manager files the request (:func:`request_erase`, exposed over HTTP by ``central serve``); the
operator runs ``incisive central tenant erase ID --confirm --request REF`` under that request. Without a
matching recorded request the erase is refused (and the refusal audited).

Order (each step recorded in ``<central>/erase/<id>.json`` and in the central audit chain once it is done):

0. **journal** written (request id, who filed it, start time, steps done: none);
1. **fenced**: the registry entry becomes ``erasing``. From here :meth:`Central.tenant` and everything built on
   it (tokens, AE titles, jobs, ``central serve``) refuse the tenant;
2. **key-destroyed**: the tenant's key ring (``<central>/keys/<id>.json``, and any temporary copy of it left
   by an interrupted atomic write) is overwritten, fsynced, unlinked and its directory fsynced. This is the
   crypto-shred point: from here no object of the tenant can be decrypted, wherever a copy of it lies (store,
   replica, restic repository, a restored old backup), because the ring is kept outside the tenant directory
   and so is never inside a backup of it;
3. **catalogue-dropped**: the tenant's SQLite file (and its -wal/-shm), or ``DROP SCHEMA tenant_<id> CASCADE``;
4. **files-removed**: the store's and quarantine's objects (with a progress callback), then the tenant dir;
5. **registry-erased**: the entry keeps its name, country, dates and the request; contact, AE titles and
   quotas go;
6. **closed**: the journal gets ``completed_at`` (it stays, a record of what was done).

Why this order is safe at every point a process can die:

* The fence (1) comes before the key is touched (2), so there is never a state where the key is gone but the
  tenant is still served: a request cannot reach rows whose objects no longer decrypt.
* The key is destroyed (2) before any data is removed (3, 4), so there is never a state where data is gone but
  the key still exists, let alone unfenced. Between 2 and 4, rows still point at objects that no longer open;
  that state exists only while the tenant is fenced and the journal open, and every later
  :meth:`Central.open` (or ``tenant erase ID --resume``) finishes the journal.
* Each step is idempotent (a missing ring, file or schema counts as done), because a kill can land after a
  step's action and before its journal line: resuming redoes it harmlessly.

Test hook: ``INCISIVE_TEST_ERASE_KILL_AT=<step>`` makes this process ``SIGKILL`` itself right after that step's
action and before its journal line (``objects-half``: half-way through removing objects). It exists only for
``tests/central/test_erase.py``; nothing sets it in production.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import text

from incisive.central.registry import Registry, TenantRecord, UnknownTenant, utc_now
from incisive.central.settings import CentralSettings
from incisive.common.audit_log import NodeAudit
from incisive.common.db import make_engine
from incisive.common.errors import InputError
from incisive.common.fsio import atomic_write_text, exclusive_lock, fsync_dir
from incisive.common.logging import detach_logs_under
from incisive.common.settings import NodeSettings
from incisive.node.store import ObjectStore

__all__ = ["STEPS", "erase_tenant", "pending_erases", "request_erase", "resume_erases"]

STEPS = ("fenced", "key-destroyed", "catalogue-dropped", "files-removed", "registry-erased", "closed")
KILL_ENV = "INCISIVE_TEST_ERASE_KILL_AT"
JOURNAL_FORMAT = "incisive-erase-journal"
Progress = Callable[[int, int], None]


class CentralLike(Protocol):
    """What an erase needs of :class:`incisive.central.home.Central` (which imports this module)."""

    settings: CentralSettings
    registry: Registry

    @property
    def dir(self) -> Path: ...

    @property
    def audit(self) -> NodeAudit: ...

    def tenant(self, tenant_id: str) -> TenantRecord: ...

    def tenant_dir(self, tenant_id: str) -> Path: ...

    def ring_path(self, tenant_id: str) -> Path: ...

    def erase_journal(self, tenant_id: str) -> Path: ...

    def forget_node(self, tenant_id: str) -> None: ...

    def tenant_catalogue_url(self, tenant_id: str) -> str: ...


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_ENV) == name:  # test-only hook, see the module docstring
        os.kill(os.getpid(), signal.SIGKILL)


# --- the request ----------------------------------------------------------------------------------------------
def request_erase(central: CentralLike, tenant_id: str, by_token_label: str) -> str:
    """Record the provider manager's erase request (tenant audit + central audit + registry); its id."""
    central.tenant(tenant_id)
    request_id = f"er-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
    by = by_token_label[:64] or "manager"
    entry = {"id": request_id, "by": by, "at": utc_now()}

    def change(records: dict[str, TenantRecord]) -> None:
        record = records.get(tenant_id)
        if record is None or record.state != "active":
            raise UnknownTenant(f"no active tenant {tenant_id!r}")
        record.erase_requests.append(entry)

    central.registry.update(change)
    details = {"request": request_id}
    NodeAudit(central.tenant_dir(tenant_id)).append(f"manager:{by}", "tenant.erase-requested", tenant_id,
                                                    details=details)
    central.audit.append(f"manager:{by}", "tenant.erase-requested", tenant_id, node=tenant_id, details=details)
    return request_id


# --- the journal ----------------------------------------------------------------------------------------------
@contextmanager
def _erase_lock(central: CentralLike) -> Iterator[None]:
    directory = central.dir / "erase"
    directory.mkdir(mode=0o700, exist_ok=True)
    with exclusive_lock(directory / ".lock"):
        yield


def _read_journal(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != JOURNAL_FORMAT:
        raise InputError(f"{path} is not an erase journal")
    return data


def _write_journal(path: Path, journal: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(journal, indent=1) + "\n", mode=0o600)


def pending_erases(central: CentralLike) -> list[str]:
    """Tenants with an erase journal that is not closed."""
    directory = central.dir / "erase"
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        if not _read_journal(path).get("completed_at"):
            found.append(path.stem)
    return found


def erase_tenant(central: CentralLike, tenant_id: str, request_id: str, *,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Crypto-shred a tenant under the manager's recorded request ``request_id``; the closed journal."""
    with _erase_lock(central):
        path = central.erase_journal(tenant_id)
        if path.exists():
            journal = _read_journal(path)
            if journal.get("completed_at"):
                raise InputError(f"tenant {tenant_id!r} was erased on {journal['completed_at']}")
            if journal["request_id"] != request_id:
                raise InputError(f"an erase of {tenant_id!r} under request {journal['request_id']} is unfinished; "
                                 "finish it with --resume")
            return _run(central, path, journal, progress)
        record = central.registry.get(tenant_id)
        if record is None or record.state not in ("active", "erasing"):
            raise UnknownTenant(f"no active tenant {tenant_id[:64]!r}")
        request = next((r for r in record.erase_requests if r["id"] == request_id), None)
        if request is None:
            central.audit.append("operator", "tenant.erase", tenant_id, node=tenant_id, outcome="refused",
                                 details={"request": request_id[:64], "reason": "no such request recorded"})
            raise InputError(f"no erase request {request_id[:64]!r} is recorded for tenant {tenant_id!r}: the "
                             "provider's manager files one (POST /tenant/v1/erase-request), then pass its id "
                             "with --request")
        journal = {"format": JOURNAL_FORMAT, "version": 1, "tenant": tenant_id, "request_id": request_id,
                   "requested_by": request["by"], "requested_at": request["at"], "started_at": utc_now(),
                   "done": [], "completed_at": ""}
        path.parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write_text(path, json.dumps(journal, indent=1) + "\n", mode=0o600, exclusive=True)
        central.audit.append("operator", "tenant.erase.start", tenant_id, node=tenant_id,
                             details={"request": request_id, "requested_by": request["by"]})
        return _run(central, path, journal, progress)


def resume_erases(central: CentralLike, progress: Progress | None = None) -> list[str]:
    """Finish every unfinished erase journal (:meth:`Central.open` calls this); the tenants finished."""
    if not pending_erases(central):
        return []
    done = []
    with _erase_lock(central):
        for tenant_id in pending_erases(central):
            path = central.erase_journal(tenant_id)
            central.audit.append("operator", "tenant.erase.resume", tenant_id, node=tenant_id)
            _run(central, path, _read_journal(path), progress)
            done.append(tenant_id)
    return done


def _run(central: CentralLike, path: Path, journal: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
    tenant_id = str(journal["tenant"])
    actions: dict[str, Callable[[], dict[str, Any]]] = {
        "fenced": lambda: _fence(central, tenant_id, journal),
        "key-destroyed": lambda: _destroy_key(central, tenant_id),
        "catalogue-dropped": lambda: _drop_catalogue(central, tenant_id),
        "files-removed": lambda: _remove_files(central, tenant_id, progress),
        "registry-erased": lambda: _registry_erased(central, tenant_id, journal),
        "closed": lambda: {},
    }
    for step in STEPS:
        if step in journal["done"]:
            continue
        details = actions[step]()
        _kill_point(step)
        journal["done"].append(step)
        if step == "closed":
            journal["completed_at"] = utc_now()
        _write_journal(path, journal)
        central.audit.append("operator", f"tenant.erase.{step}", tenant_id, node=tenant_id,
                             details={"request": journal["request_id"], **details})
    return journal


# --- the steps --------------------------------------------------------------------------------------------------
def _fence(central: CentralLike, tenant_id: str, journal: dict[str, Any]) -> dict[str, Any]:
    central.registry.set_state(tenant_id, "erasing", erase_request=journal["request_id"])
    central.forget_node(tenant_id)
    return {}


def _shred(path: Path) -> bool:
    """Overwrite with random bytes, fsync, unlink (what :meth:`KeyRing.destroy` does, without unwrapping)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(fd).st_size
        view = memoryview(secrets.token_bytes(max(size, 1)))
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    return True


def _destroy_key(central: CentralLike, tenant_id: str) -> dict[str, Any]:
    ring = central.ring_path(tenant_id)
    # the ring itself and any temporary copy an interrupted atomic write of it left behind
    shredded = sum(_shred(p) for p in [ring, *ring.parent.glob(f".{ring.name}.*.tmp")])
    fsync_dir(ring.parent)
    return {"files_shredded": shredded}


def _tenant_url(central: CentralLike, tenant_id: str) -> str:
    home = central.tenant_dir(tenant_id)
    try:
        return NodeSettings.load(home).effective_catalogue_url
    except Exception:  # the directory may be half gone after a kill: fall back to what tenant add chose
        return central.tenant_catalogue_url(tenant_id)


def _drop_catalogue(central: CentralLike, tenant_id: str) -> dict[str, Any]:
    central.forget_node(tenant_id)
    url = _tenant_url(central, tenant_id)
    if url.startswith("sqlite"):
        db = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        if db.parent.is_dir():
            fsync_dir(db.parent)
        return {"catalogue": "sqlite"}
    schema = "tenant_" + tenant_id.replace("-", "_")
    engine = make_engine(central.settings.catalogue_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()
    return {"catalogue": "postgresql"}


def _remove_files(central: CentralLike, tenant_id: str, progress: Progress | None) -> dict[str, Any]:
    home = central.tenant_dir(tenant_id)
    stores = [ObjectStore(home / "store"), ObjectStore(home / "quarantine")]
    digests = [(s, d) for s in stores for d in s.iter_digests()]
    total = len(digests)
    for number, (store, digest) in enumerate(digests, 1):
        store.path(digest).unlink(missing_ok=True)
        if number == total // 2:
            _kill_point("objects-half")
        if progress is not None:
            progress(number, total)
    detach_logs_under(home)  # this process's handle on the tenant's log goes before the file (also on a resume)
    if home.exists():
        shutil.rmtree(home)
        fsync_dir(home.parent)
    return {"objects_removed": total}


def _registry_erased(central: CentralLike, tenant_id: str, journal: dict[str, Any]) -> dict[str, Any]:
    central.registry.set_state(tenant_id, "erased", erase_request=journal["request_id"], erased_at=utc_now(),
                               contact="", ae_title="", allowed_aes=[], quota_bytes=0, quota_instances=0,
                               erase_requests=[])
    return {}

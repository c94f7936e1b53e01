"""The tenant registry, ``<central>/tenants.json``: who the tenants are and in which state, never their data.

```
{"format": "incisive-central-tenants", "version": 1,
 "tenants": {"<id>": {"name", "country", "contact", "created_at", "state", "ae_title", "allowed_aes",
                      "quota_bytes", "quota_instances", "erase_requests", "erase_request", "erased_at"}}}
```
States: ``creating`` (``tenant add`` under way; refused everywhere), ``active``, ``erasing`` (an erase journal
exists: refused everywhere from then on), ``erased`` (only the name, country, dates and the request are kept).
Every change goes through :meth:`Registry.update`: an exclusive ``flock`` on ``.tenants.lock`` around read,
change and one atomic write (:func:`incisive.common.fsio.atomic_write_text`), so two processes (``central serve``
filing an erase request, the operator's CLI adding a tenant) never lose each other's change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from incisive.common.errors import ConfigError, InputError
from incisive.common.fsio import atomic_write_text, exclusive_lock

REGISTRY_NAME = "tenants.json"
FORMAT = "incisive-central-tenants"
TenantState = Literal["creating", "active", "erasing", "erased"]
T = TypeVar("T")


class UnknownTenant(InputError):
    """No such tenant, or one that is being created, being erased or erased."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class TenantRecord:
    id: str
    name: str
    country: str
    contact: str
    created_at: str
    state: TenantState = "active"
    ae_title: str = ""
    allowed_aes: list[str] = field(default_factory=list)
    quota_bytes: int = 0
    quota_instances: int = 0
    erase_requests: list[dict[str, str]] = field(default_factory=list)  # {id, by, at}, filed by the manager
    erase_request: str = ""  # the request the erase ran under
    erased_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, tenant_id: str, data: dict[str, Any]) -> TenantRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "id"}
        return cls(id=tenant_id, **known)

    def public(self) -> dict[str, Any]:
        """What listings show: no contact details of an erased tenant, no request bookkeeping."""
        data = self.to_dict()
        data.pop("erase_requests")
        return data


class Registry:
    def __init__(self, central_dir: Path) -> None:
        self.path = central_dir / REGISTRY_NAME
        self._lock_path = central_dir / ".tenants.lock"
        self._cache: tuple[tuple[int, int], dict[str, TenantRecord]] | None = None

    def _read(self) -> dict[str, TenantRecord]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("format") != FORMAT:
                raise ValueError("not a tenant registry")
            records = {tid: TenantRecord.from_dict(tid, data) for tid, data in doc["tenants"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"tenant registry {self.path} is damaged ({type(exc).__name__}); "
                              "restore it from the central directory's backup") from None
        self._cache = (stamp, records)
        return records

    def forget(self) -> None:
        """Drop the cached copy (the next read goes to the file)."""
        self._cache = None

    def all(self) -> dict[str, TenantRecord]:
        """Every record (a fresh copy of each), re-read when the file changed."""
        return {tid: TenantRecord.from_dict(tid, r.to_dict()) for tid, r in self._read().items()}

    def get(self, tenant_id: str) -> TenantRecord | None:
        return self.all().get(tenant_id)

    def _write(self, records: dict[str, TenantRecord]) -> None:
        doc = {"format": FORMAT, "version": 1,
               "tenants": {tid: {k: v for k, v in r.to_dict().items() if k != "id"}
                           for tid, r in sorted(records.items())}}
        atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n", mode=0o600)
        self._cache = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry's lock (other writers wait); re-entrant use in one process is not supported."""
        with exclusive_lock(self._lock_path):
            yield

    def update(self, change: Callable[[dict[str, TenantRecord]], T]) -> T:
        """Run ``change`` on every record under the lock and write the result (atomically) when it returns."""
        with self.locked():
            return self.update_unlocked(change)

    def update_unlocked(self, change: Callable[[dict[str, TenantRecord]], T]) -> T:
        """:meth:`update` for a caller that holds :meth:`locked` already."""
        self._cache = None
        records = self.all()
        result = change(records)
        self._write(records)
        return result

    def set_state(self, tenant_id: str, state: TenantState, **values: Any) -> TenantRecord:
        def change(records: dict[str, TenantRecord]) -> TenantRecord:
            record = records.get(tenant_id)
            if record is None:
                raise UnknownTenant(f"no tenant {tenant_id!r}")
            record.state = state
            for name, value in values.items():
                setattr(record, name, value)
            return record

        return self.update(change)

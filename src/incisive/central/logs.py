"""Logs of a Central Node: ``central/logs/central.log`` for the operator, ``central/tenants/<id>/logs/incisive.log``
for each tenant, kept apart by a context variable.

Whatever serves a tenant (an HTTP request routed to its app, a DIMSE association whose called AE title is its)
runs inside :func:`tenant_context`; every record logged there is tagged with the tenant id. A tenant's log file
takes only records tagged with that tenant (:func:`isolate_tenant_logs` filters the file handler
:meth:`incisive.node.home.Node.open` attached for it, which would otherwise receive every tenant's records), and
``central.log`` takes every record, with its tag (``tenant=-`` when none). The logging rule of the code base
holds here too: no PHI, no token, no value read from tenant data (:mod:`incisive.common.logging`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from incisive.common.logging import LOGGER_NAME

CENTRAL_LOG = "central.log"
_tenant: ContextVar[str] = ContextVar("incisive_central_tenant", default="")


def current_tenant() -> str:
    """The tenant the running code serves, or ``""``."""
    return _tenant.get()


@contextmanager
def tenant_context(tenant_id: str) -> Iterator[None]:
    """Tag every record logged inside with ``tenant_id``."""
    token = _tenant.set(tenant_id)
    try:
        yield
    finally:
        _tenant.reset(token)


def _tag(record: logging.LogRecord) -> str:
    tag = getattr(record, "tenant", None)
    if not isinstance(tag, str):
        tag = _tenant.get() or "-"
        record.tenant = tag
    return tag


class TagFilter(logging.Filter):
    """Passes every record and sets ``record.tenant`` (for the central log's format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _tag(record)
        return True


class TenantFilter(logging.Filter):
    """Passes only records logged while serving ``tenant``."""

    def __init__(self, tenant: str) -> None:
        super().__init__()
        self.tenant = tenant

    def filter(self, record: logging.LogRecord) -> bool:
        return _tag(record) == self.tenant


def configure_central_logging(central_dir: Path, level: int = logging.INFO) -> logging.Handler:
    """Attach the handler of ``<central>/logs/central.log`` (idempotent per path)."""
    root = logging.getLogger(LOGGER_NAME)
    log_dir = central_dir / "logs"
    target = str((log_dir / CENTRAL_LOG).resolve())
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == target:
            return handler
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    handler = logging.FileHandler(target, encoding="utf-8")
    handler.addFilter(TagFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s tenant=%(tenant)s %(name)s %(message)s"))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return handler


def isolate_tenant_logs(central_dir: Path) -> int:
    """Give every file handler writing under ``<central>/tenants/<id>/`` a filter for its tenant's records only
    (idempotent; call it after tenant nodes were opened). Returns how many handlers got one now."""
    tenants_dir = (central_dir / "tenants").resolve()
    added = 0
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if not isinstance(handler, logging.FileHandler):
            continue
        try:
            relative = Path(handler.baseFilename).resolve().relative_to(tenants_dir)
        except ValueError:
            continue
        tenant = relative.parts[0] if len(relative.parts) > 1 else ""
        if not tenant or any(isinstance(f, TenantFilter) for f in handler.filters):
            continue
        handler.addFilter(TenantFilter(tenant))
        added += 1
    return added

"""Shared route dependencies: the database, settings, the hub, the failed-authentication throttle, and the
bearer-token principal with RBAC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from incisive.common.logging import get_logger
from incisive.common.throttle import Report, Throttle
from incisive.platform.db import PlatformDb
from incisive.platform.errors import Forbidden, TooManyRequests, Unauthorized
from incisive.platform.hub import Hub
from incisive.platform.rbac import allowed
from incisive.platform.services import audit, users
from incisive.platform.settings import PlatformSettings

log = get_logger("platform.auth")
# how each kind of failed authentication is audited (one aggregated entry per source and window)
AUTH_ACTIONS = {"token": "token.auth", "invite": "node.enrol", "activation": "user.activate", "agent": "agent.auth"}


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: str


def get_db(request: Request) -> PlatformDb:
    db: PlatformDb = request.app.state.db
    return db


def get_settings(request: Request) -> PlatformSettings:
    settings: PlatformSettings = request.app.state.settings
    return settings


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def get_throttle(request: Request) -> Throttle:
    throttle: Throttle = request.app.state.throttle
    return throttle


def source_of(request: Request) -> str:
    """The caller's address; behind a trusted proxy (``trusted_proxies``) the last X-Forwarded-For hop."""
    host = request.client.host if request.client else "unknown"
    settings = get_settings(request)
    if host in settings.trusted_proxies:
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[-1].strip()
        return forwarded[:64] or host
    return host


def record(db: PlatformDb, reports: Iterable[Report]) -> None:
    """Audit the throttle's aggregated reports (each in its own transaction; never fails the request)."""
    for r in reports:
        try:
            with db.session() as s:
                audit.append(s, "agent" if r.kind in ("agent", "invite") else "anonymous", AUTH_ACTIONS[r.kind],
                             target=r.source, node=r.accounts[0] if r.kind == "agent" and r.accounts else "",
                             outcome="refused", details=r.details())
        except Exception:
            log.exception("could not audit failed authentication")


def guard(db: PlatformDb, throttle: Throttle, source: str, kind: str, account: str | None = None) -> None:
    """Refuse with 429 a source (or account) in back-off or locked out."""
    wait = throttle.retry_after(source, account)
    if wait is not None:
        record(db, throttle.throttled(source, kind, account))
        raise TooManyRequests(wait)


def failed(db: PlatformDb, throttle: Throttle, source: str, kind: str, account: str | None, reason: str) -> None:
    record(db, throttle.failed(source, kind, account, reason[:120]))


Db = Annotated[PlatformDb, Depends(get_db)]
Settings = Annotated[PlatformSettings, Depends(get_settings)]
HubDep = Annotated[Hub, Depends(get_hub)]


def _check(db: PlatformDb, throttle: Throttle, source: str, authorization: str | None, permission: str,
           path: str) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("missing bearer token")
    guard(db, throttle, source, "token")
    token = authorization[7:].strip()
    try:
        if not token or len(token) > 200:
            raise Unauthorized("invalid or revoked token")
        with db.session() as s:
            user = users.authenticate(s, token)
            principal = Principal(user.id, user.username, user.role)
            if allowed(user.role, permission):
                return principal
    except Unauthorized as exc:
        failed(db, throttle, source, "token", None, str(exc))
        raise
    with db.session() as s:
        audit.append(s, principal.username, "access.denied", target=path[:128], outcome="forbidden",
                     details={"permission": permission, "role": principal.role})
    raise Forbidden(f"role {principal.role!r} lacks permission {permission!r}")


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits a user whose role holds ``permission`` (see :mod:`incisive.platform.rbac`).
    Failed authentication is throttled per source (429 with Retry-After) and audited in aggregate."""

    async def dependency(request: Request, db: Db,
                         authorization: Annotated[str | None, Header()] = None) -> Principal:
        principal = await run_in_threadpool(_check, db, get_throttle(request), source_of(request), authorization,
                                            permission, request.url.path)
        request.state.principal = principal  # named in the audit entry of a request that fails with 500
        return principal

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return dependency

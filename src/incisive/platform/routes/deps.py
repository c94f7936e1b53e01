"""Shared route dependencies: the database, settings, the hub, and the bearer-token principal with RBAC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from incisive.platform.db import PlatformDb
from incisive.platform.errors import Forbidden, Unauthorized
from incisive.platform.hub import Hub
from incisive.platform.rbac import allowed
from incisive.platform.services import audit, users
from incisive.platform.settings import PlatformSettings


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


Db = Annotated[PlatformDb, Depends(get_db)]
Settings = Annotated[PlatformSettings, Depends(get_settings)]
HubDep = Annotated[Hub, Depends(get_hub)]


def _check(db: PlatformDb, authorization: str | None, permission: str, path: str) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("missing bearer token")
    token = authorization[7:].strip()
    if not token or len(token) > 200:
        raise Unauthorized("invalid or revoked token")
    with db.session() as s:
        user = users.authenticate(s, token)
        principal = Principal(user.id, user.username, user.role)
        if allowed(user.role, permission):
            return principal
    with db.session() as s:
        audit.append(s, principal.username, "access.denied", target=path[:128], outcome="forbidden",
                     details={"permission": permission, "role": principal.role})
    raise Forbidden(f"role {principal.role!r} lacks permission {permission!r}")


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits a user whose role holds ``permission`` (see :mod:`incisive.platform.rbac`)."""

    async def dependency(request: Request, db: Db,
                         authorization: Annotated[str | None, Header()] = None) -> Principal:
        return await run_in_threadpool(_check, db, authorization, permission, request.url.path)

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return dependency

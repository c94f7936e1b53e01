"""Users, their own tokens, activation, and privacy budgets. No route makes a token for another user."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from incisive.platform.errors import Forbidden, Gone, Unauthorized
from incisive.platform.rbac import Role
from incisive.platform.routes.deps import Db, Principal, Settings, failed, get_throttle, guard, require, source_of
from incisive.platform.services import users

router = APIRouter(prefix="/api/v1", tags=["users"])
Username = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]


TokenId = Annotated[int, Path(ge=1, le=2**62)]
Person = Field(default=None, min_length=1, max_length=128, pattern=r"^[a-z0-9][a-z0-9._@+-]*$",
               description="The person behind the account (e.g. an institutional e-mail; default: the user name). "
                           "Budgets belong to the person; one person has one enabled account at a time.")


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    role: Role
    person: str | None = Person


class Activation(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    secret: str = Field(min_length=1, max_length=200)
    label: str = Field(default="activation", max_length=64)


class NewToken(BaseModel):
    label: str = Field(default="", max_length=64)


class Budget(BaseModel):
    budget: float = Field(ge=0, le=1e6)
    project: str | None = Field(default=None, max_length=64, description="The project (default: queries "
                                "without a project)")


@router.get("/me")
async def me(principal: Annotated[Principal, Depends(require("budgets:read"))]) -> dict[str, Any]:
    return {"username": principal.username, "role": principal.role}


@router.get("/users")
async def list_users(db: Db, _p: Annotated[Principal, Depends(require("users:read"))]) -> list[dict[str, Any]]:
    def work() -> list[dict[str, Any]]:
        with db.session() as s:
            return users.list_users(s)
    return await run_in_threadpool(work)


@router.post("/users", status_code=201)
async def add_user(body: NewUser, db: Db, settings: Settings,
                   principal: Annotated[Principal, Depends(require("users:manage"))]) -> dict[str, Any]:
    """Create an account; the answer holds its one-time activation secret (never a token): hand it to the user,
    who makes their own first token with ``POST /api/v1/activate``."""
    def work() -> dict[str, Any]:
        with db.session() as s:
            user, secret = users.create_user(s, body.username, body.role.value, settings.default_dp_budget,
                                             principal.username, body.person, settings.activation_ttl_s)
            expires = user.activation_expires_at
            return {**users.user_dict(user), "activation_secret": secret,
                    "activation_expires_at": expires.isoformat() if expires else None}
    return await run_in_threadpool(work)


@router.post("/activate")
async def activate(body: Activation, request: Request, db: Db, settings: Settings) -> dict[str, Any]:
    """Spend a new account's one-time activation secret on its first API token (shown once). No bearer token;
    failures are throttled per source and per account (429 with Retry-After) and audited in aggregate."""
    throttle, source = get_throttle(request), source_of(request)

    def work() -> dict[str, Any]:
        guard(db, throttle, source, "activation", body.username)
        try:
            with db.session() as s:
                out = users.activate(s, body.username, body.secret, settings.token_ttl_days, body.label)
        except (Unauthorized, Gone) as exc:
            failed(db, throttle, source, "activation", body.username, str(exc))
            raise
        throttle.succeeded(body.username)
        return out
    return await run_in_threadpool(work)


@router.get("/me/tokens")
async def my_tokens(db: Db, principal: Annotated[Principal, Depends(require("tokens:own"))]) -> list[dict[str, Any]]:
    """Your tokens: id, label, created, expires, last used, revoked (never the token)."""
    def work() -> list[dict[str, Any]]:
        with db.session() as s:
            return users.list_tokens(s, principal.username)
    return await run_in_threadpool(work)


@router.post("/me/tokens", status_code=201)
async def new_token(db: Db, settings: Settings, principal: Annotated[Principal, Depends(require("tokens:own"))],
                    body: NewToken | None = None) -> dict[str, Any]:
    """Another token for yourself (shown once), expiring after ``token_ttl_days``."""
    def work() -> dict[str, Any]:
        with db.session() as s:
            return users.issue_token(s, users.get_user(s, principal.username), (body or NewToken()).label,
                                     principal.username, settings.token_ttl_days)
    return await run_in_threadpool(work)


@router.post("/me/tokens/{token_id}/revoke")
async def revoke_my_token(token_id: TokenId, db: Db,
                          principal: Annotated[Principal, Depends(require("tokens:own"))]) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        with db.session() as s:
            return users.revoke_token(s, principal.username, token_id, principal.username)
    return await run_in_threadpool(work)


@router.get("/users/{username}/tokens")
async def user_tokens(username: Username, db: Db,
                      _p: Annotated[Principal, Depends(require("users:manage"))]) -> list[dict[str, Any]]:
    """A user's tokens by id (never the value), for an admin to revoke."""
    def work() -> list[dict[str, Any]]:
        with db.session() as s:
            return users.list_tokens(s, username)
    return await run_in_threadpool(work)


@router.post("/users/{username}/tokens/{token_id}/revoke")
async def revoke_user_token(username: Username, token_id: TokenId, db: Db,
                            principal: Annotated[Principal, Depends(require("users:manage"))]) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        with db.session() as s:
            return users.revoke_token(s, username, token_id, principal.username)
    return await run_in_threadpool(work)


async def _set_disabled(db: Any, username: str, disabled: bool, actor: str) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        with db.session() as s:
            return users.set_disabled(s, username, disabled, actor)
    return await run_in_threadpool(work)


@router.post("/users/{username}/disable")
async def disable(username: Username, db: Db,
                  principal: Annotated[Principal, Depends(require("users:manage"))]) -> dict[str, Any]:
    """Disable an account: every one of its tokens is refused (401) until it is enabled again."""
    return await _set_disabled(db, username, True, principal.username)


@router.post("/users/{username}/enable")
async def enable(username: Username, db: Db,
                 principal: Annotated[Principal, Depends(require("users:manage"))]) -> dict[str, Any]:
    return await _set_disabled(db, username, False, principal.username)


@router.get("/budgets/{username}")
async def get_budget(username: Username, db: Db,
                     principal: Annotated[Principal, Depends(require("budgets:read"))]) -> dict[str, Any]:
    if principal.role == Role.researcher and principal.username != username:
        raise Forbidden("researchers may read their own budget only")

    def work() -> dict[str, Any]:
        with db.session() as s:
            return users.budgets(s, username)
    return await run_in_threadpool(work)


@router.put("/budgets/{username}")
async def set_budget(username: Username, body: Budget, db: Db,
                     principal: Annotated[Principal, Depends(require("budgets:manage"))]) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        with db.session() as s:
            return users.set_budget(s, username, body.budget, principal.username, body.project)
    return await run_in_threadpool(work)

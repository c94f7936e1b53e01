"""Users, tokens and privacy budgets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from incisive.platform.errors import Forbidden
from incisive.platform.rbac import Role
from incisive.platform.routes.deps import Db, Principal, Settings, require
from incisive.platform.services import users

router = APIRouter(prefix="/api/v1", tags=["users"])
Username = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    role: Role


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
    def work() -> dict[str, Any]:
        with db.session() as s:
            user, token = users.add_user(s, body.username, body.role.value, settings.default_dp_budget,
                                         principal.username)
            return {**users.user_dict(user), "token": token}
    return await run_in_threadpool(work)


@router.post("/users/{username}/tokens", status_code=201)
async def new_token(username: Username, db: Db,
                    principal: Annotated[Principal, Depends(require("users:manage"))]) -> dict[str, str]:
    def work() -> dict[str, str]:
        with db.session() as s:
            return {"username": username, "token": users.create_token(s, users.get_user(s, username), "api",
                                                                      principal.username)}
    return await run_in_threadpool(work)


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

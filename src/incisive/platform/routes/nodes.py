"""Node registry for people: invites, list, revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from incisive.platform.routes.deps import Db, HubDep, Principal, Settings, require
from incisive.platform.services import nodes

router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])


class NewInvite(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    ttl_s: float | None = Field(default=None, gt=0, le=30 * 86400)


@router.get("")
async def list_nodes(db: Db, settings: Settings,
                     _p: Annotated[Principal, Depends(require("nodes:read"))]) -> list[dict[str, Any]]:
    def work() -> list[dict[str, Any]]:
        with db.session() as s:
            return nodes.list_nodes(s, settings.node_offline_s)
    return await run_in_threadpool(work)


@router.post("/invites", status_code=201)
async def invite(body: NewInvite, db: Db, settings: Settings,
                 principal: Annotated[Principal, Depends(require("nodes:manage"))]) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        with db.session() as s:
            return nodes.create_invite(s, body.name, body.ttl_s or settings.invite_ttl_s, principal.username)
    return await run_in_threadpool(work)


@router.post("/{node_id}/revoke")
async def revoke(node_id: Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")],
                 db: Db, hub: HubDep,
                 principal: Annotated[Principal, Depends(require("nodes:manage"))]) -> dict[str, Any]:
    def work() -> None:
        with db.session() as s:
            nodes.revoke(s, node_id, principal.username)
    await run_in_threadpool(work)
    # bump the node's generation and wake its long-polls: each re-checks the database (not idle any more) and is
    # refused at once, instead of skipping the wake-up as one that brought no job (tests/platform/test_enrolment.py)
    hub.job_queued(node_id)
    return {"node_id": node_id, "revoked": True}

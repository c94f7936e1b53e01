"""Federated queries (researchers): counts and numeric summaries across nodes."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from incisive.common.query_spec import MAX_FILTER_VALUE, MAX_GROUP_FIELDS
from incisive.platform.errors import BadRequest, Unauthorized
from incisive.platform.hub import query_key
from incisive.platform.models import User
from incisive.platform.routes.deps import Db, HubDep, Principal, Settings, require
from incisive.platform.services import queries

router = APIRouter(prefix="/api/v1/queries", tags=["queries"])
NodeId = Annotated[str, Field(min_length=1, max_length=63)]
FieldName = Annotated[str, Field(min_length=1, max_length=40)]


class Common(BaseModel):
    nodes: list[NodeId] | None = Field(default=None, max_length=1000)
    project: str | None = Field(default=None, max_length=64)
    timeout_s: float | None = Field(default=None, gt=0, le=600)


class CountRequest(Common):
    by: list[FieldName] = Field(min_length=1, max_length=MAX_GROUP_FIELDS)
    where: dict[FieldName, Annotated[str, Field(max_length=MAX_FILTER_VALUE)]] | None = Field(default=None,
                                                                                            max_length=8)
    unit: Literal["patients", "studies", "series"] = "patients"
    epsilon: float | None = Field(default=None, gt=0, le=10)


class SummaryRequest(Common):
    metric: str = Field(min_length=1, max_length=40)


async def _run(kind: str, params: dict[str, Any], timeout_s: float | None, principal: Principal, db: Any,
               settings: Any, hub: Any) -> dict[str, Any]:
    def start() -> queries.Started:
        try:
            with db.session() as s:
                user = s.get(User, principal.user_id)
                if user is None:
                    raise Unauthorized("user no longer exists")
                return queries.start(s, user, kind, params, settings, handed)
        except (queries.QueryRefused, BadRequest) as exc:  # rolled back: audit it in a transaction of its own
            refusal = exc if isinstance(exc, queries.QueryRefused) else queries.QueryRefused(
                "invalid_query", str(exc), queries.spec_of(kind, params))
            with db.session() as s:
                user = s.get(User, principal.user_id)
                if user is not None:
                    queries.record_refusal(s, user, kind, refusal)
            raise

    handed = hub.waiting_nodes()  # their long-polls get the job from memory, no database round trip
    started = await run_in_threadpool(start)
    for node_id in started.waiting:
        if node_id in handed:
            hub.hand_over(node_id, started.jobs[node_id])
        else:
            hub.job_queued(node_id)
    loop = asyncio.get_running_loop()
    limit = min(timeout_s or settings.query_timeout_s, settings.query_timeout_s)
    deadline = loop.time() + limit
    event = hub.event(query_key(started.query_id))

    try:
        while started.waiting and not set(started.waiting) <= hub.answers(started.query_id):
            event.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await hub.wait(event, min(remaining, 0.5))
    finally:
        hub.forget(started.query_id)

    def finish() -> dict[str, Any]:
        with db.session() as s:
            user = s.get(User, principal.user_id)
            assert user is not None
            return queries.finish(s, started, user)
    return await run_in_threadpool(finish)


@router.post("/count")
async def count(body: CountRequest, db: Db, settings: Settings, hub: HubDep,
                principal: Annotated[Principal, Depends(require("queries:run"))]) -> dict[str, Any]:
    """Counts by the given fields on every (or the named) node, through each node's disclosure control: only
    safe cells are listed, with one suppressed figure per node; with ε (required by default) noisy counts over
    the declared value domain. A node refused by one of its rules, or whose answer is invalid, is named in
    ``refusals`` with the rule; the others still answer."""
    params = body.model_dump(exclude={"timeout_s"})
    return await _run("count", params, body.timeout_s, principal, db, settings, hub)


@router.post("/summary")
async def summary(body: SummaryRequest, db: Db, settings: Settings, hub: HubDep,
                  principal: Annotated[Principal, Depends(require("queries:run"))]) -> dict[str, Any]:
    """Pooled n, mean and SD of a numeric metric; a node with n below k contributes nothing."""
    params = body.model_dump(exclude={"timeout_s"})
    return await _run("summary", params, body.timeout_s, principal, db, settings, hub)

"""Inference through the platform: a researcher asks a node to score its data with a trained model; the node
keeps the results and answers with a disclosure-controlled summary only when its policy allows."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from incisive.platform.routes.deps import Db, HubDep, Principal, Settings, require
from incisive.platform.services import inference

router = APIRouter(prefix="/api/v1", tags=["inference"])


class NewInference(BaseModel):
    model: str = Field(min_length=3, max_length=130, description="NAME:VERSION@JOB (a trained model)")
    node: str = Field(min_length=1, max_length=63, description="The node that runs it")
    series: list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$")]] | None = Field(
        default=None, max_length=inference.MAX_SERIES, description="Series UIDs to score; default: all")
    project: str | None = Field(default=None, max_length=64)


@router.post("/inference", status_code=202)
async def create(body: NewInference, db: Db, settings: Settings, hub: HubDep,
                 principal: Annotated[Principal, Depends(require("fl:run"))]) -> dict[str, Any]:
    """Queue inference at one node; poll ``GET /api/v1/inference/{id}`` for the node's answer."""
    def work() -> dict[str, Any]:
        with db.session() as s:
            return inference.request(s, principal.username, body.model, body.node, body.series, body.project,
                                     settings)
    request = await run_in_threadpool(work)
    hub.job_queued(body.node)  # committed: wake the node's waiting long-poll
    return request


@router.get("/inference/{request_id}")
async def get(request_id: Annotated[str, Path(min_length=1, max_length=32)], db: Db,
              _p: Annotated[Principal, Depends(require("fl:read"))]) -> dict[str, Any]:
    """Status of an inference request and the node's summary (or why there is none)."""
    def work() -> dict[str, Any]:
        with db.session() as s:
            return inference.get(s, request_id)
    return await run_in_threadpool(work)

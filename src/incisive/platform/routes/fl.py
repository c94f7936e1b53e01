"""Model registry (admins register bundles) and federated-learning jobs (researchers start them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from incisive.platform.fl_runner import FlRunner
from incisive.platform.routes.deps import Db, Principal, Settings, require
from incisive.platform.services import fl_jobs, models

router = APIRouter(prefix="/api/v1", tags=["federated learning"])
Name = Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")]
Version = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")]
NodeId = Annotated[str, Field(min_length=1, max_length=63)]
ARCHIVE_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}}


def runner(request: Request) -> FlRunner:
    fl: FlRunner = request.app.state.fl
    return fl


@router.post("/models", status_code=201, openapi_extra=ARCHIVE_BODY)
async def register(request: Request, db: Db,
                   name: Annotated[str, Query(min_length=1, max_length=63)],
                   version: Annotated[str, Query(min_length=1, max_length=32)],
                   principal: Annotated[Principal, Depends(require("models:manage"))]) -> dict[str, Any]:
    """Register a bundle: the body is its tar.gz (``incisive model register`` makes it); answers its sha256."""
    archive = await request.body()

    def work() -> dict[str, Any]:
        with db.session() as s:
            record, created = models.register(s, archive, name, version, principal.username)
        return {**record, "created": created}
    return await run_in_threadpool(work)


@router.get("/models")
async def list_models(db: Db, _p: Annotated[Principal, Depends(require("models:read"))]) -> list[dict[str, Any]]:
    def work() -> list[dict[str, Any]]:
        with db.session() as s:
            return models.list_bundles(s)
    return await run_in_threadpool(work)


@router.get("/models/{name}/{version}")
async def model(name: Name, version: Version, db: Db,
                _p: Annotated[Principal, Depends(require("models:read"))]) -> dict[str, Any]:
    """A bundle with its trained models (job, weights sha256, provenance)."""
    def work() -> dict[str, Any]:
        with db.session() as s:
            return models.describe(s, name, version)
    return await run_in_threadpool(work)


class NewJob(BaseModel):
    op: Literal["train", "evaluate"] = "train"
    model: str = Field(min_length=3, max_length=130, description="NAME:VERSION (evaluate: NAME:VERSION@JOB)")
    nodes: list[NodeId] | None = Field(default=None, max_length=1000, description="default: every enrolled node")
    rounds: int = Field(default=5, ge=1, le=1000)
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    proximal_mu: float = Field(default=0.1, ge=0, le=100)
    dp_epsilon: float = Field(default=0.0, ge=0, le=100)
    dp_delta: float = Field(default=1e-5, gt=0, lt=1)
    secagg: bool = False
    round_timeout: float = Field(default=120.0, gt=0, le=3600)
    min_nodes: int | None = Field(default=None, ge=1, le=1000)
    local_epochs: int = Field(default=0, ge=0, le=1000)
    seed: int = Field(default=0, ge=0, le=2**31)
    project: str | None = Field(default=None, max_length=64)


@router.post("/fl/jobs", status_code=202)
async def create_job(body: NewJob, request: Request, db: Db, settings: Settings,
                     principal: Annotated[Principal, Depends(require("fl:run"))]) -> dict[str, Any]:
    """Start federated training (or evaluation): queued, then run by the platform's SuperLink."""
    params = body.model_dump(exclude={"op", "model", "nodes"})

    def work() -> dict[str, Any]:
        with db.session() as s:
            return fl_jobs.create(s, principal.username, body.op, body.model, params, body.nodes, settings)
    job = await run_in_threadpool(work)
    runner(request).submit(job["id"])
    return job


@router.get("/fl/jobs")
async def list_jobs(db: Db, _p: Annotated[Principal, Depends(require("fl:read"))],
                    limit: int = Query(default=100, ge=1, le=1000)) -> list[dict[str, Any]]:
    def work() -> list[dict[str, Any]]:
        with db.session() as s:
            return fl_jobs.list_jobs(s, limit)
    return await run_in_threadpool(work)


@router.get("/fl/jobs/{job_id}")
async def get_job(job_id: Annotated[str, Path(min_length=1, max_length=32)], db: Db,
                  _p: Annotated[Principal, Depends(require("fl:read"))]) -> dict[str, Any]:
    """Status, per-node participation, per-round metrics, provenance."""
    def work() -> dict[str, Any]:
        with db.session() as s:
            return fl_jobs.get(s, job_id)
    return await run_in_threadpool(work)

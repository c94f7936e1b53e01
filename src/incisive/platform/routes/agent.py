"""Endpoints for node agents: enrolment (invite token), then Ed25519-signed requests only."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from incisive.platform.db import PlatformDb
from incisive.platform.errors import PlatformError
from incisive.platform.hub import node_key, query_key
from incisive.platform.routes.deps import Db, HubDep, Settings
from incisive.platform.services import audit, jobs, nodes

router = APIRouter(prefix="/agent/v1", tags=["agent"])


class Enrolment(BaseModel):
    token: str = Field(min_length=1, max_length=200)
    node_id: str = Field(min_length=1, max_length=63)
    provider: str = Field(default="", max_length=128)
    public_key: str = Field(min_length=1, max_length=64)


class Heartbeat(BaseModel):
    version: str | None = Field(default=None, max_length=32)
    disk_free_bytes: int | None = None
    backup_age_days: float | None = None
    readiness: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None


class Result(BaseModel):
    status: Literal["ok", "refused", "error"]
    result: dict[str, Any] | None = None
    error: str | None = Field(default=None, max_length=500)


def _signed_path(request: Request) -> str:
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


async def signed_node(request: Request, db: PlatformDb, window_s: float) -> str:
    """Verify the request's signature (raw body bytes, method, path, time, nonce); the node id, or raise."""
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    path, method = _signed_path(request), request.method

    def work() -> str:
        try:
            with db.session() as s:
                return nodes.authenticate_request(s, headers, method, path, body, window_s).node_id
        except PlatformError as exc:
            with db.session() as s:
                audit.append(s, "agent", "agent.auth", target=path.split("?")[0][:128],
                             node=headers.get("x-incisive-node", "")[:63], outcome="refused",
                             details={"reason": str(exc)})
            raise
    return await run_in_threadpool(work)


@router.post("/enrol")
async def enrol(body: Enrolment, db: Db) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        try:
            with db.session() as s:
                return nodes.enrol(s, body.token, body.node_id, body.provider, body.public_key)
        except PlatformError as exc:
            with db.session() as s:
                audit.append(s, "agent", "node.enrol", node=body.node_id[:63], outcome="refused",
                             details={"reason": str(exc)})
            raise
    return await run_in_threadpool(work)


@router.post("/heartbeat")
async def heartbeat(request: Request, db: Db, settings: Settings) -> dict[str, Any]:
    node_id = await signed_node(request, db, settings.signature_window_s)
    payload = Heartbeat.model_validate_json(await request.body() or b"{}")

    def work() -> None:
        with db.session() as s:
            node = nodes.authenticate_known(s, node_id)
            nodes.heartbeat(s, node, payload.model_dump())
            nodes.prune_nonces(s, settings.signature_window_s)
    await run_in_threadpool(work)
    return {"ok": True}


@router.get("/jobs")
async def poll(request: Request, db: Db, settings: Settings, hub: HubDep,
               wait: float = Query(default=20.0, ge=0, le=120)) -> dict[str, Any]:
    node_id = await signed_node(request, db, settings.signature_window_s)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.long_poll_s)
    event = hub.event(node_key(node_id))

    def claim() -> list[dict[str, Any]]:
        with db.session() as s:
            nodes.authenticate_known(s, node_id)  # revoked while waiting: refused at once
            return jobs.claim(s, node_id, settings.redeliver_s)

    while True:
        event.clear()
        found = await run_in_threadpool(claim)
        remaining = deadline - loop.time()
        if found or remaining <= 0:
            return {"jobs": found}
        await hub.wait(event, min(remaining, 1.0))


@router.post("/jobs/{job_id}/result")
async def result(job_id: str, request: Request, db: Db, settings: Settings, hub: HubDep) -> dict[str, Any]:
    node_id = await signed_node(request, db, settings.signature_window_s)
    body = Result.model_validate_json(await request.body() or b"{}")

    def work() -> str | None:
        with db.session() as s:
            return jobs.submit(s, node_id, job_id[:64], body.model_dump())
    query_id = await run_in_threadpool(work)
    if query_id:
        hub.notify(query_key(query_id))
    return {"acked": True}

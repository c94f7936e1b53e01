"""Endpoints for node agents: enrolment (invite token), then Ed25519-signed requests only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from incisive.common import tls
from incisive.common.protocol import Result
from incisive.platform import pki
from incisive.platform.db import PlatformDb
from incisive.platform.errors import BadRequest, Forbidden, Gone, NotFound, PlatformError, Unauthorized
from incisive.platform.hub import node_key
from incisive.platform.routes.deps import Db, failed, get_db, get_hub, get_settings, get_throttle, guard, source_of
from incisive.platform.services import audit, jobs, nodes

router = APIRouter(prefix="/agent/v1", tags=["agent"])
T = TypeVar("T")


class Enrolment(BaseModel):
    token: str = Field(min_length=1, max_length=200)
    node_id: str = Field(min_length=1, max_length=63)
    provider: str = Field(default="", max_length=128)
    public_key: str = Field(min_length=1, max_length=64)
    fl_public_key: str = Field(default="", max_length=1024)  # Flower SuperNode key (OpenSSH EC), see platform.pki


class BreachBeat(BaseModel):
    """An open personal-data breach of the node (ids and times only: no free text)."""

    id: str = Field(pattern=r"^br-[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9a-f]{4}$")
    deadline: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")  # UTC, 72 h
    hours_left: float | None = Field(default=None, ge=-1e6, le=1e6)
    notified: bool = False  # the supervisory authority was notified


class Heartbeat(BaseModel):
    version: str | None = Field(default=None, max_length=32)
    disk_free_bytes: int | None = None
    backup_age_days: float | None = None
    readiness: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    sandbox: dict[str, str] | None = None  # {"state": ok|off|unavailable, "reason": …}
    breaches: list[BreachBeat] | None = Field(default=None, max_length=50)  # open ones (node sends ≤ 20)


def _signed_path(request: Request) -> str:
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


async def signed(request: Request, db: PlatformDb, window_s: float, then: Callable[[Session, nodes.NodeRef], T]) -> T:
    """Verify the request's signature (raw body bytes, method, path, time, nonce), then run ``then`` in the same
    transaction (one database round trip per agent request). Refusals are audited."""
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    path, method = _signed_path(request), request.method
    throttle, source = get_throttle(request), source_of(request)
    claimed = headers.get("x-incisive-node", "")[:63] or None

    def work() -> T:
        guard(db, throttle, source, "agent", claimed)  # in back-off: 429 before the signature is checked
        try:
            with db.session() as s:
                node = nodes.authenticate_request(s, headers, method, path, body, window_s)
                return then(s, node)
        except (Unauthorized, Forbidden) as exc:  # audited as one aggregated entry per source and window
            failed(db, throttle, source, "agent", claimed, f"{path.split('?')[0][:60]}: {exc}")
            raise
    return await run_in_threadpool(work)


@router.post("/enrol")
async def enrol(body: Enrolment, request: Request, db: Db) -> dict[str, Any]:
    throttle, source = get_throttle(request), source_of(request)

    settings = get_settings(request)

    def work() -> dict[str, Any]:
        guard(db, throttle, source, "invite")
        try:
            fl_key = _flower_key(body.fl_public_key)
            with db.session() as s:
                enrolled = nodes.enrol(s, body.token, body.node_id, body.provider, body.public_key)
            if fl_key:
                pki.record_key(settings, enrolled["node_id"], fl_key)
            return {**enrolled, "superlink_ca": pki.superlink_ca_pem(settings)}
        except (Unauthorized, Gone) as exc:  # a bad, used or expired invite: throttled, audited in aggregate
            failed(db, throttle, source, "invite", None, str(exc))
            raise
        except PlatformError as exc:
            with db.session() as s:
                audit.append(s, "agent", "node.enrol", node=body.node_id[:63], outcome="refused",
                             details={"reason": str(exc)})
            raise
    return await run_in_threadpool(work)


def _flower_key(text: str) -> str:
    if not text:
        return ""
    try:
        return tls.check_flower_public_key(text)
    except (ValueError, UnicodeError):
        raise BadRequest("fl_public_key is not an OpenSSH EC public key on a NIST curve") from None


@router.post("/heartbeat")
async def heartbeat(request: Request) -> dict[str, Any]:
    db, settings = get_db(request), get_settings(request)
    try:
        payload = Heartbeat.model_validate_json(await request.body() or b"{}").model_dump()
    except ValidationError:
        payload = None

    def then(s: Session, node: nodes.NodeRef) -> None:
        if payload is None:
            raise BadRequest("invalid heartbeat body")
        nodes.heartbeat(s, node, payload)
        nodes.prune_nonces(s, settings.signature_window_s)
    await signed(request, db, settings.signature_window_s, then)
    return {"ok": True}


async def _long_poll(request: Request, wait: float,
                     first: Callable[[Session, nodes.NodeRef, bool], tuple[str, T, list[dict[str, Any]]]],
                     committed: Callable[[str, T], None] | None = None) -> tuple[T, list[dict[str, Any]]]:
    """Authenticate and run ``first`` (which also claims jobs); if nothing was claimed, hold the request until a
    job for this node is queued (woken at once) or the wait ends."""
    db, settings, hub = get_db(request), get_settings(request), get_hub(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.long_poll_s)
    claimed = request.headers.get("x-incisive-node", "")
    hub.clear(node_key(claimed))  # a job queued from now on wakes us
    generation = hub.generation(claimed)
    skip = hub.idle(claimed)  # nothing queued since the last empty claim: no need to ask the database
    node_id, extra, found = await signed(request, db, settings.signature_window_s, lambda s, n: first(s, n, skip))
    if committed is not None:
        committed(node_id, extra)
    if not found and not skip:
        hub.mark_idle(node_id, generation)
    found = found + hub.take(node_id)
    event = hub.event(node_key(node_id))

    def claim() -> list[dict[str, Any]]:
        with db.session() as s:
            nodes.authenticate_known(s, node_id)  # revoked while waiting: refused at once
            return jobs.claim(s, node_id, settings.redeliver_s)

    hub.enter_wait(node_id)
    try:
        while not found:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            woken = await hub.wait(event, min(remaining, 5.0))  # at once by a new job or a revocation here
            event.clear()
            found = hub.take(node_id)  # handed over in memory by a query of this process
            if found or (woken and hub.idle(node_id)):
                continue  # (every tick without a wake-up asks the database: redelivery; a revoke bumps the generation)
            generation = hub.generation(node_id)
            found = await run_in_threadpool(claim)
            if not found:
                hub.mark_idle(node_id, generation)
    finally:
        hub.leave_wait(node_id)
    return extra, found


@router.get("/jobs")
async def poll(request: Request, wait: float = Query(default=20.0, ge=0, le=120)) -> dict[str, Any]:
    """Long-poll for jobs (signed)."""
    redeliver_s = get_settings(request).redeliver_s

    def first(s: Session, node: nodes.NodeRef, skip: bool) -> tuple[str, None, list[dict[str, Any]]]:
        return node.node_id, None, [] if skip else jobs.claim(s, node.node_id, redeliver_s)

    _none, found = await _long_poll(request, wait, first)
    return {"jobs": found}


class Exchange(BaseModel):
    results: dict[Annotated[str, Field(max_length=64)], Result] = Field(default_factory=dict, max_length=100)


@router.post("/exchange")
async def exchange(request: Request, wait: float = Query(default=20.0, ge=0, le=120)) -> dict[str, Any]:
    """Deliver results and long-poll for jobs in one signed request; ``acked`` lists the results stored."""
    hub, redeliver_s = get_hub(request), get_settings(request).redeliver_s
    try:
        body: Exchange | None = Exchange.model_validate_json(await request.body() or b"{}")
    except ValidationError:
        body = None

    def first(s: Session, node: nodes.NodeRef,
              skip: bool) -> tuple[str, tuple[list[str], list[str]], list[dict[str, Any]]]:
        if body is None:
            raise BadRequest("invalid exchange body")
        acked, queries = [], []
        for job_id, res in body.results.items():
            try:
                query_id = jobs.submit(s, node.node_id, job_id, res.body())
            except NotFound:
                query_id = None  # not ours or unknown: acknowledged so that the node drops it
            acked.append(job_id)
            if query_id:
                queries.append(query_id)
        return node.node_id, (acked, queries), [] if skip else jobs.claim(s, node.node_id, redeliver_s)

    def answered(node_id: str, extra: tuple[list[str], list[str]]) -> None:
        for query_id in extra[1]:  # stored and committed: the waiting queries can finish
            hub.answer(query_id, node_id)

    (acked, _queries), found = await _long_poll(request, wait, first, answered)
    return {"acked": acked, "jobs": found}


@router.post("/jobs/{job_id}/result")
async def result(job_id: str, request: Request) -> dict[str, Any]:
    db, settings, hub = get_db(request), get_settings(request), get_hub(request)
    try:
        body = Result.model_validate_json(await request.body() or b"{}").body()
    except ValidationError:
        body = None

    def then(s: Session, node: nodes.NodeRef) -> tuple[str, str | None]:
        if body is None:
            raise BadRequest("invalid result body")
        return node.node_id, jobs.submit(s, node.node_id, job_id[:64], body)

    node_id, query_id = await signed(request, db, settings.signature_window_s, then)
    if query_id:
        hub.answer(query_id, node_id)
    return {"acked": True}

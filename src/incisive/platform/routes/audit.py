"""The platform audit log for auditors: JSON-lines export and chain verification."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from incisive.platform.routes.deps import Db, Principal, require
from incisive.platform.services import audit

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("/verify")
async def verify(db: Db, principal: Annotated[Principal, Depends(require("audit:read"))]) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        with db.session() as s:
            result = audit.verify(s).as_dict()
            audit.append(s, principal.username, "audit.verify", outcome="ok" if result["ok"] else "broken")
            return result
    return await run_in_threadpool(work)


@router.get("/export", response_class=StreamingResponse)
async def export(db: Db, principal: Annotated[Principal, Depends(require("audit:read"))]) -> StreamingResponse:
    def collect() -> list[str]:
        with db.session() as s:
            audit.append(s, principal.username, "audit.export")
        with db.session() as s:
            return [json.dumps(e, sort_keys=True) + "\n" for e in audit.entries(s)]

    lines = await run_in_threadpool(collect)

    def body() -> Iterator[str]:
        yield from lines
    return StreamingResponse(body(), media_type="application/x-ndjson")

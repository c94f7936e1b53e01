"""The platform's FastAPI application: users/RBAC, nodes, agent link, federated queries, model registry and
federated-learning jobs, audit; OpenAPI at ``/openapi.json`` and docs at ``/docs``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from incisive import __version__
from incisive.common.errors import CatalogueUnavailable
from incisive.common.logging import get_logger
from incisive.common.throttle import Throttle
from incisive.platform.db import PlatformDb
from incisive.platform.errors import PlatformError, TooManyRequests
from incisive.platform.fl_runner import FlRunner
from incisive.platform.hub import Hub
from incisive.platform.routes import agent, agent_fl, audit, fl, inference, nodes, queries, users
from incisive.platform.routes.deps import record
from incisive.platform.services import audit as audit_log
from incisive.platform.settings import PlatformSettings

log = get_logger("platform")


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 (by Content-Length, or while streaming)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._reject(scope, receive, send)
            return
        seen = 0
        rejected = False

        async def limited() -> Message:
            nonlocal seen, rejected
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # streamed without (or beyond) Content-Length: answer now
                    rejected = True
                    await self._reject(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            if not rejected:
                await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not rejected:
                raise

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)


def create_app(settings: PlatformSettings, db: PlatformDb | None = None) -> FastAPI:
    database = db or PlatformDb(settings.effective_db_url)
    hub = Hub()
    runner = FlRunner(settings, database, hub)
    throttle = Throttle(settings.auth_window_s, settings.auth_free_failures, settings.auth_backoff_max_s,
                        settings.auth_lockout_failures, settings.auth_lockout_s)

    async def close_windows() -> None:  # the summary of a window with no later failure is written when it ends
        while True:
            await asyncio.sleep(settings.auth_window_s)
            await run_in_threadpool(record, database, throttle.flush())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub.bind()
        await run_in_threadpool(runner.recover)
        closer = asyncio.create_task(close_windows())
        yield
        closer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closer
        await run_in_threadpool(record, database, throttle.flush(everything=True))
        await run_in_threadpool(runner.close)

    app = FastAPI(title="incisive platform", version=__version__, lifespan=lifespan,
                  description="Registry, RBAC, node agent link, federated queries with disclosure control, "
                              "model registry and federated learning (Flower), audit.")
    app.state.settings, app.state.db, app.state.hub, app.state.fl = settings, database, hub, runner
    app.state.throttle = throttle
    for module in (users, nodes, queries, fl, inference, audit, agent, agent_fl):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.get("/api/v1/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.exception_handler(PlatformError)
    async def platform_error(_request: Request, exc: PlatformError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after_s)}
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(ValidationError)
    async def invalid_body(_request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse({"detail": "invalid request body"}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = sorted({".".join(str(p) for p in e.get("loc", ())[:3]) for e in exc.errors()})[:10]
        return JSONResponse({"detail": "invalid request", "fields": fields}, status_code=422)

    @app.exception_handler(CatalogueUnavailable)
    async def unavailable(_request: Request, exc: CatalogueUnavailable) -> JSONResponse:
        log.error("platform database unavailable")
        return JSONResponse({"detail": "database unavailable; retry later"}, status_code=503)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        """Every request that fails with 500 still leaves its audit entry (who, which route, the error's class;
        never its message, which may hold data)."""
        principal = getattr(request.state, "principal", None)

        def write() -> None:
            with database.session() as s:
                audit_log.append(s, principal.username if principal else "anonymous", "request.error",
                                 target=request.url.path[:128], outcome="error",
                                 details={"method": request.method, "error": type(exc).__name__})
        try:
            await run_in_threadpool(write)
        except Exception:
            log.exception("could not audit a failed request")
        return JSONResponse({"detail": "internal error; it was logged and audited"}, status_code=500)

    return app


def openapi(settings: PlatformSettings) -> dict[str, Any]:
    return create_app(settings).openapi()

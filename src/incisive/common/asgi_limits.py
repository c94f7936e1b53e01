"""An ASGI middleware that bounds request bodies: a size limit per path prefix and an idle limit between chunks.

* **Size**: a body over its limit is answered 413 — at once when ``Content-Length`` says so (nothing is read),
  else as soon as the streamed bytes pass the limit; the application then sees ``http.disconnect``.
* **Idle**: when no body chunk arrives for ``idle_s`` seconds the request is answered 408 and the application
  sees ``http.disconnect`` (a slow-body client cannot hold a worker; slow *headers* are the protocol's job:
  :mod:`incisive.compat.uvicorn_0_49`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from incisive.common.logging import get_logger

log = get_logger("http.limits")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None,
                 idle_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})
        self.idle_s = idle_s

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.per_path.items():
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(str(scope.get("path", "")))
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _answer(scope, send, 413, f"request body larger than {limit} bytes")
            return
        seen = 0
        answered = False
        started = False

        async def limited() -> Message:
            nonlocal seen, answered
            if answered:
                return {"type": "http.disconnect"}
            try:
                message = await asyncio.wait_for(receive(), self.idle_s)
            except TimeoutError:
                log.warning("HTTP request body idle for %.0f s; answered 408", self.idle_s)
                answered = True
                if not started:
                    await _answer(scope, send, 408, f"request body idle for more than {self.idle_s:.0f} s")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # streamed without (or beyond) Content-Length: answer now
                    answered = True
                    if not started:
                        await _answer(scope, send, 413, f"request body larger than {limit} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if answered and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not answered:
                raise


async def _answer(scope: Scope, send: Send, status: int, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)

"""Run the platform with uvicorn: in the foreground (``platform serve``) or in a thread (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from incisive.common.errors import ConfigError
from incisive.compat.uvicorn_0_49 import server_options
from incisive.platform.app import create_app
from incisive.platform.db import PlatformDb
from incisive.platform.settings import PlatformSettings


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def config(settings: PlatformSettings, db: PlatformDb | None = None) -> uvicorn.Config:
    """Bounded: request headers within ``http_header_timeout_s``, idle keep-alive ``http_keep_alive_s``, at most
    ``http_max_connections`` connections or tasks (503 beyond), a 16 KiB request head; bodies: ``BodyLimit``."""
    limits = server_options(settings.http_header_timeout_s, settings.http_keep_alive_s,
                            settings.http_max_connections)
    app: Any = create_app(settings, db)
    tls: dict[str, Any] = {}
    if settings.tls_cert or settings.tls_key:  # HTTPS built in (docs/deployment.md); else plain HTTP / a proxy
        if not (settings.tls_cert and settings.tls_key):
            raise ConfigError("tls_cert and tls_key go together")
        tls = {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key}
        if settings.hsts_max_age_s:
            app = Hsts(app, settings.hsts_max_age_s)
    return uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=2, **limits, **tls)


class Hsts:
    """ASGI wrapper: ``Strict-Transport-Security`` on every HTTP response (only when the platform serves TLS)."""

    def __init__(self, app: Any, max_age_s: int) -> None:
        self.app, self.value = app, f"max-age={max_age_s}; includeSubDomains".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_hsts(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"strict-transport-security", self.value)]}
            await send(message)
        await self.app(scope, receive, send_hsts)


def serve_forever(settings: PlatformSettings, db: PlatformDb | None = None) -> None:
    sock = bind(settings.host, settings.port)
    uvicorn.Server(config(settings, db)).run(sockets=[sock])


class ThreadedServer:
    """The platform on ``host``:any free port in a daemon thread; ``url`` once started."""

    def __init__(self, settings: PlatformSettings, db: PlatformDb | None = None) -> None:
        self.sock = bind(settings.host, settings.port)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"{'https' if settings.tls_cert else 'http'}://{settings.host}:{self.port}"
        self.server = uvicorn.Server(config(settings, db))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="platform-http")

    def start(self, timeout_s: float = 30.0) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("platform server did not start")
            self.thread.join(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

"""uvicorn 0.49 internals that the node's and the platform's HTTP servers reach into (tests: ``tests/compat``).

**A header timeout** (:func:`header_timeout_protocol`). uvicorn closes a keep-alive connection that stays idle
between requests (``timeout_keep_alive``), but nothing closes one that sends half a request header and then
waits: ``H11Protocol.data_received`` cancels the keep-alive timer on the first byte and no timer replaces it, so
a slowloris client holds its connection (and a ``limit_concurrency`` slot) for ever. The subclass arms a timer
when a connection is made and again when a response completes (``connection_made``, ``on_response_complete``);
if it fires while h11 still waits for the request line and headers (``conn.their_state is h11.IDLE``, no request
in progress) the transport is closed. A request whose headers arrived is not affected (its body has its own idle
limit, :mod:`incisive.common.asgi_limits`).

It reads ``H11Protocol.conn``, ``transport``, ``loop``, ``cycle`` and overrides ``connection_made``,
``connection_lost`` and ``on_response_complete``; uvicorn's ``auto`` choice would pick httptools when installed,
whose protocol has neither this hook nor ``h11_max_incomplete_event_size``, so :func:`server_options` names the
h11 protocol explicitly.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from incisive.common.logging import get_logger

log = get_logger("http.limits")

SUPPORTED = ("0.49.0",)
MAX_HEADER_BYTES = 16 * 1024  # request line + headers (h11's incomplete-event limit)


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that closes a connection whose request headers do not arrive in time."""

    header_timeout_s: float = 10.0

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout_s,
                                                                              self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        waiting = self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)
        if waiting:
            log.warning("HTTP connection closed: request headers not received within %.0f s",
                        self.header_timeout_s)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()


def applies() -> bool:
    return uvicorn.__version__ in SUPPORTED


def header_timeout_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with the given header timeout."""
    return type("BoundedH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_s": float(header_timeout_s)})


def server_options(header_timeout_s: float, keep_alive_s: float, max_connections: int) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments that bound a server: header and keep-alive timeouts, the size of a
    request head, and at most ``max_connections`` connections or tasks (503 beyond)."""
    return {
        "http": header_timeout_protocol(header_timeout_s),
        "timeout_keep_alive": keep_alive_s,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "limit_concurrency": max_connections,
    }

"""Bounded HTTP resources of ``platform serve`` (issue 16 item 3), over real sockets to the uvicorn server:
half a header and idle keep-alive connections are closed within seconds, a body over the limit gets 413 before
it is read, and connections beyond the cap get 503."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from incisive.platform.server import ThreadedServer
from tests.platform.conftest import make_platform

TIMEOUT = 60


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[Any, ThreadedServer]] = []

    def start(**settings: Any) -> ThreadedServer:
        p = make_platform(tmp_path / f"platform{len(started)}", **settings)
        server = ThreadedServer(p.settings, p.db).start()
        started.append((p, server))
        return server

    yield start
    for p, server in started:
        server.stop()
        p.db.dispose()


def _connect(server: ThreadedServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data[9:12])


def _closed_within(sock: socket.socket, seconds: float) -> float:
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for more than {seconds} s")
    return time.monotonic() - start


GET = b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_half_a_header_is_closed_within_seconds(serve: Any) -> None:
    server = serve(http_header_timeout_s=2.0)
    with _connect(server) as sock:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert _closed_within(sock, 20) < 15


def test_half_a_second_header_on_a_kept_alive_connection_is_closed(serve: Any) -> None:
    """The keep-alive timer stops at the first byte of the next request; the header timer takes over."""
    server = serve(http_header_timeout_s=2.0, http_keep_alive_s=30.0)
    with _connect(server) as sock:
        sock.sendall(GET)
        assert _status(sock) == 200
        time.sleep(0.5)
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHo")
        assert _closed_within(sock, 20) < 15


def test_idle_keep_alive_is_closed(serve: Any) -> None:
    server = serve(http_keep_alive_s=1.0)
    with _connect(server) as sock:
        sock.sendall(GET)
        assert _status(sock) == 200
        assert _closed_within(sock, 20) < 15


def test_default_timeouts_are_seconds(serve: Any) -> None:
    server = serve()
    config = server.server.config
    assert config.timeout_keep_alive <= 30 and config.limit_concurrency is not None
    assert config.h11_max_incomplete_event_size is not None and config.h11_max_incomplete_event_size <= 65536


def test_growing_header_block_is_refused(serve: Any) -> None:
    """A request head that keeps growing without an end is refused once over 16 KiB (not buffered for ever)."""
    server = serve(http_header_timeout_s=60.0)
    with _connect(server) as sock:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000)
        assert _status(sock) == 400


def test_body_over_the_limit_gets_413_unread(serve: Any) -> None:
    server = serve(max_body_bytes=4096)
    with _connect(server) as sock:
        sock.sendall(b"POST /api/v1/models?name=a&version=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Length: 500000000\r\n\r\n")
        assert _status(sock) == 413


def test_connections_beyond_the_cap_get_503(serve: Any) -> None:
    server = serve(http_max_connections=4, http_header_timeout_s=60.0, http_keep_alive_s=60.0)
    held = []
    try:
        for _ in range(4):
            s = _connect(server)
            s.sendall(GET)
            held.append(s)
        time.sleep(0.5)
        with _connect(server) as extra:
            extra.sendall(GET)
            assert _status(extra) == 503
    finally:
        for s in held:
            s.close()

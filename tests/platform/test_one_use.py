"""One-use secrets are spent by one conditional UPDATE (issue 16 item 2): 20 concurrent enrolments with one invite
enrol exactly one node, and 20 concurrent activations with one activation secret make exactly one token, on
SQLite and PostgreSQL, against a real HTTP server (uvicorn in a thread)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import func, select

from incisive.common import signing
from incisive.platform.home import Platform
from incisive.platform.models import ApiToken, Node
from incisive.platform.server import ThreadedServer
from incisive.platform.services import users
from tests.platform.conftest import invite

N = 20


@pytest.fixture
def server(platform: Platform) -> Iterator[ThreadedServer]:
    srv = ThreadedServer(platform.settings, platform.db).start()
    yield srv
    srv.stop()


def _race(call: Callable[[int], int]) -> Counter[int]:
    """Run ``call(i)`` in N threads released at the same instant; the HTTP status codes."""
    barrier = threading.Barrier(N)
    codes: list[int] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait(30)
        code = call(i)
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(codes) == N, "some requests never answered"
    return Counter(codes)


def test_concurrent_enrolments_with_one_invite(platform: Platform, server: ThreadedServer) -> None:
    token = invite(platform)
    keys = [signing.public_key_b64(signing.generate_private_key()) for _ in range(N)]

    def enrol(i: int) -> int:
        r = httpx.post(f"{server.url}/agent/v1/enrol", timeout=60,
                       json={"token": token, "node_id": f"hospital-{i}", "public_key": keys[i]})
        return r.status_code

    codes = _race(enrol)
    with platform.db.session() as s:
        enrolled = s.scalar(select(func.count()).select_from(Node))
    assert enrolled == 1, f"{enrolled} nodes enrolled with one invite ({dict(codes)})"
    assert codes[200] == 1 and set(codes) <= {200, 410, 429}, dict(codes)


def test_concurrent_activations_with_one_secret(platform: Platform, server: ThreadedServer) -> None:
    with platform.db.session() as s:
        user, secret = users.create_user(s, "nia", "researcher", 1.0, "test")
        user_id = user.id

    def activate(_i: int) -> int:
        r = httpx.post(f"{server.url}/api/v1/activate", timeout=60, json={"username": "nia", "secret": secret})
        return r.status_code

    codes = _race(activate)
    with platform.db.session() as s:
        tokens = s.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.user_id == user_id))
    assert tokens == 1, f"{tokens} tokens made with one activation secret ({dict(codes)})"
    assert codes[200] == 1 and set(codes) <= {200, 401, 410, 429}, dict(codes)

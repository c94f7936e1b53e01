"""Platform fixtures: a platform on SQLite *and* PostgreSQL, an in-process client, users of every role, and
helpers to enrol nodes and sign agent requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from incisive.common import signing
from incisive.platform.app import create_app
from incisive.platform.home import Platform
from incisive.platform.rbac import Role
from incisive.platform.services import nodes, users

FAST = {"port": 0, "query_timeout_s": 10.0, "long_poll_s": 1.0, "redeliver_s": 1.0, "node_offline_s": 60.0,
        "require_dp": False}  # (new platforms require ε; these tests ask for exact counts unless they say otherwise)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def platform_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("pg_database")
    return url


def make_platform(home: Path, db_url: str = "", **overrides: Any) -> Platform:
    platform = Platform.init(home, db_url=db_url)
    platform.settings = platform.settings.model_copy(update={**FAST, **overrides})
    return platform


@pytest.fixture
def platform(tmp_path: Path, platform_db_url: str) -> Iterator[Platform]:
    p = make_platform(tmp_path / "platform", platform_db_url)
    yield p
    p.db.dispose()


@pytest.fixture
def sqlite_platform(tmp_path: Path) -> Iterator[Platform]:
    p = make_platform(tmp_path / "platform")
    yield p
    p.db.dispose()


def role_tokens(platform: Platform) -> dict[str, str]:
    out = {}
    with platform.db.session() as s:
        for role in Role:
            _user, token = users.add_user(s, role.value.replace("-", ""), role.value, 1.0, "test")
            out[role.value] = token
    return out


@dataclass
class Api:
    platform: Platform
    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)

    def h(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def _api(platform: Platform) -> Iterator[Api]:
    app = create_app(platform.settings, platform.db)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(platform, client, role_tokens(platform))


@pytest.fixture
def api(platform: Platform) -> Iterator[Api]:
    yield from _api(platform)


@pytest.fixture
def sqlite_api(sqlite_platform: Platform) -> Iterator[Api]:
    yield from _api(sqlite_platform)


def invite(platform: Platform, name: str = "Hospital A", ttl_s: float = 3600) -> str:
    with platform.db.session() as s:
        token: str = nodes.create_invite(s, name, ttl_s, "test")["token"]
    return token


@dataclass
class FakeNode:
    """A node identity that signs requests by hand (for tampering and replay tests)."""

    client: TestClient
    node_id: str
    key: Ed25519PrivateKey

    def signed(self, method: str, path: str, body: Any = None, **sign: Any) -> tuple[bytes, dict[str, str]]:
        content = b"" if body is None else json.dumps(body).encode()
        headers = signing.sign_headers(self.key, self.node_id, method, path, content, **sign)
        if content:
            headers["Content-Type"] = "application/json"
        return content, headers

    def send(self, method: str, path: str, body: Any = None, **sign: Any) -> Any:
        content, headers = self.signed(method, path, body, **sign)
        return self.client.request(method, path, content=content, headers=headers)


def enrol_fake(api: Api, node_id: str = "hospital-a") -> FakeNode:
    key = signing.generate_private_key()
    r = api.client.post("/agent/v1/enrol", json={"token": invite(api.platform, node_id), "node_id": node_id,
                                                 "public_key": signing.public_key_b64(key)})
    assert r.status_code == 200, r.text
    return FakeNode(api.client, node_id, key)

"""Every user endpoint × every role (and no token): allowed roles get through, others get 403, no token 401."""

from __future__ import annotations

from typing import Any

import pytest

from incisive.platform.app import create_app
from incisive.platform.rbac import PERMISSIONS, Role, allowed
from tests.platform.conftest import Api

# (method, path, json body, permission): every route under /api/v1 except the public health check
ENDPOINTS: list[tuple[str, str, Any, str]] = [
    ("GET", "/api/v1/me", None, "budgets:read"),
    ("GET", "/api/v1/users", None, "users:read"),
    ("POST", "/api/v1/users", {"username": "newbie", "role": "researcher"}, "users:manage"),
    ("POST", "/api/v1/users/researcher/tokens", None, "users:manage"),
    ("GET", "/api/v1/budgets/researcher", None, "budgets:read"),
    ("PUT", "/api/v1/budgets/researcher", {"budget": 3.0}, "budgets:manage"),
    ("GET", "/api/v1/nodes", None, "nodes:read"),
    ("POST", "/api/v1/nodes/invites", {"name": "Hospital Z"}, "nodes:manage"),
    ("POST", "/api/v1/nodes/no-such-node/revoke", None, "nodes:manage"),
    ("POST", "/api/v1/queries/count", {"by": ["modality"], "timeout_s": 0.2}, "queries:run"),
    ("POST", "/api/v1/queries/summary", {"metric": "rows", "timeout_s": 0.2}, "queries:run"),
    ("GET", "/api/v1/audit/verify", None, "audit:read"),
    ("GET", "/api/v1/audit/export", None, "audit:read"),
    ("POST", "/api/v1/models", None, "models:manage"),
    ("GET", "/api/v1/models", None, "models:read"),
    ("GET", "/api/v1/models/tabular-risk/1", None, "models:read"),
    ("POST", "/api/v1/fl/jobs", {"model": "tabular-risk:1"}, "fl:run"),
    ("GET", "/api/v1/fl/jobs", None, "fl:read"),
    ("GET", "/api/v1/fl/jobs/no-such-job", None, "fl:read"),
    ("POST", "/api/v1/inference", {"model": "tabular-risk:1@no-such-job", "node": "seed"}, "fl:run"),
    ("GET", "/api/v1/inference/no-such-request", None, "fl:read"),
]


def test_matrix_covers_every_user_route(tmp_path: Any) -> None:
    from incisive.platform.settings import PlatformSettings

    app = create_app(PlatformSettings(home=tmp_path))
    paths = app.openapi()["paths"]
    routes = {(m.upper(), p) for p, ops in paths.items() if p.startswith("/api/v1") and p != "/api/v1/health"
              for m in ops}
    listed = {(m, p.replace("researcher", "{username}").replace("no-such-node", "{node_id}")
               .replace("tabular-risk/1", "{name}/{version}").replace("no-such-job", "{job_id}")
               .replace("no-such-request", "{request_id}"))
              for m, p, _, _ in ENDPOINTS}
    assert routes == listed
    assert {perm for *_, perm in ENDPOINTS} == set(PERMISSIONS)


@pytest.mark.parametrize("role", [*[r.value for r in Role], None])
def test_role_endpoint_matrix(sqlite_api: Api, role: str | None) -> None:
    api = sqlite_api
    api.client.post("/api/v1/nodes/invites", json={"name": "seed"}, headers=api.h("admin"))  # a node to exist
    for method, path, body, permission in ENDPOINTS:
        headers = api.h(role) if role else {}
        r = api.client.request(method, path, json=body, headers=headers)
        if role is None:
            assert r.status_code == 401, (method, path)
        elif allowed(role, permission):
            assert r.status_code not in (401, 403), (role, method, path, r.text)
            assert r.status_code < 500, (role, method, path, r.text)
        else:
            assert r.status_code == 403, (role, method, path, r.status_code)


def test_denials_are_audited(sqlite_api: Api) -> None:
    api = sqlite_api
    assert api.client.get("/api/v1/users", headers=api.h("researcher")).status_code == 403
    lines = api.client.get("/api/v1/audit/export", headers=api.h("auditor")).text.splitlines()
    assert any('"access.denied"' in line and '"researcher"' in line for line in lines)


def test_bad_and_revoked_tokens(sqlite_api: Api) -> None:
    api = sqlite_api
    for header in ("Bearer nope", "Basic abc", "Bearer " + "x" * 500, "Bearer "):
        assert api.client.get("/api/v1/me", headers={"Authorization": header}).status_code == 401
    from incisive.platform.services import users

    with api.platform.db.session() as s:
        users.disable_user(s, "auditor", "test")
    assert api.client.get("/api/v1/me", headers=api.h("auditor")).status_code == 401


def test_tokens_are_hashed_at_rest(sqlite_api: Api) -> None:
    raw = (sqlite_api.platform.home / "platform.db").read_bytes()
    for token in sqlite_api.tokens.values():
        assert token.encode() not in raw

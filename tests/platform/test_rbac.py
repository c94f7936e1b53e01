"""Every user endpoint × every role (and no token): allowed roles get through, others get 403, no token 401."""

from __future__ import annotations

from typing import Any

import pytest

from incisive.platform.app import create_app
from incisive.platform.rbac import PERMISSIONS, Role, allowed
from tests.platform.conftest import Api

A, D, R, U = "admin", "dp-manager", "researcher", "auditor"
EVERYONE = frozenset({A, D, R, U})

# The expected matrix as data, written by hand and independent of rbac.py (issue 16 item 1, issue 17 item 4):
# (method, path, json body) -> the roles that get through. Everything else is 403; no token is 401.
EXPECTED: list[tuple[str, str, Any, frozenset[str]]] = [
    ("GET", "/api/v1/me", None, EVERYONE),
    ("GET", "/api/v1/me/tokens", None, EVERYONE),
    ("POST", "/api/v1/me/tokens", {"label": "laptop"}, EVERYONE),
    ("POST", "/api/v1/me/tokens/999999/revoke", None, EVERYONE),
    ("GET", "/api/v1/users", None, frozenset({A, D, U})),
    ("POST", "/api/v1/users", {"username": "newbie", "role": "researcher"}, frozenset({A})),
    ("POST", "/api/v1/users/researcher/disable", None, frozenset({A})),
    ("POST", "/api/v1/users/researcher/enable", None, frozenset({A})),
    ("GET", "/api/v1/users/researcher/tokens", None, frozenset({A})),
    ("POST", "/api/v1/users/researcher/tokens/999999/revoke", None, frozenset({A})),
    ("GET", "/api/v1/budgets/researcher", None, EVERYONE),
    ("PUT", "/api/v1/budgets/researcher", {"budget": 3.0}, frozenset({D})),
    ("GET", "/api/v1/nodes", None, EVERYONE),
    ("POST", "/api/v1/nodes/invites", {"name": "Hospital Z"}, frozenset({A})),
    ("POST", "/api/v1/nodes/no-such-node/revoke", None, frozenset({A})),
    ("POST", "/api/v1/queries/count", {"by": ["modality"], "timeout_s": 0.2}, frozenset({R})),
    ("POST", "/api/v1/queries/summary", {"metric": "rows", "timeout_s": 0.2}, frozenset({R})),
    ("GET", "/api/v1/audit/verify", None, frozenset({A, U})),
    ("GET", "/api/v1/audit/export", None, frozenset({A, U})),
    ("POST", "/api/v1/models", None, frozenset({A})),
    ("GET", "/api/v1/models", None, EVERYONE),
    ("GET", "/api/v1/models/tabular-risk/1", None, EVERYONE),
    ("POST", "/api/v1/fl/jobs", {"model": "tabular-risk:1"}, frozenset({R})),
    ("GET", "/api/v1/fl/jobs", None, EVERYONE),
    ("GET", "/api/v1/fl/jobs/no-such-job", None, EVERYONE),
    ("POST", "/api/v1/inference", {"model": "tabular-risk:1@no-such-job", "node": "seed"}, frozenset({R})),
    ("GET", "/api/v1/inference/no-such-request", None, EVERYONE),
]
# routes that take no bearer token (they are throttled instead): the activation of a new account
PUBLIC = {("POST", "/api/v1/activate"), ("GET", "/api/v1/health")}
# the permission each route names in rbac.py (what the implementation claims; checked against EXPECTED below)
ENDPOINTS: list[tuple[str, str, Any, str]] = [
    ("GET", "/api/v1/me", None, "budgets:read"),
    ("GET", "/api/v1/me/tokens", None, "tokens:own"),
    ("POST", "/api/v1/me/tokens", {"label": "laptop"}, "tokens:own"),
    ("POST", "/api/v1/me/tokens/999999/revoke", None, "tokens:own"),
    ("GET", "/api/v1/users", None, "users:read"),
    ("POST", "/api/v1/users", {"username": "newbie", "role": "researcher"}, "users:manage"),
    ("POST", "/api/v1/users/researcher/disable", None, "users:manage"),
    ("POST", "/api/v1/users/researcher/enable", None, "users:manage"),
    ("GET", "/api/v1/users/researcher/tokens", None, "users:manage"),
    ("POST", "/api/v1/users/researcher/tokens/999999/revoke", None, "users:manage"),
    *[(m, p, b, perm) for (m, p, b, _), perm in zip(EXPECTED[10:], [
        "budgets:read", "budgets:manage", "nodes:read", "nodes:manage", "nodes:manage", "queries:run",
        "queries:run", "audit:read", "audit:read", "models:manage", "models:read", "models:read", "fl:run",
        "fl:read", "fl:read", "fl:run", "fl:read"], strict=True)],
]


def _template(path: str) -> str:
    return (path.replace("/users/researcher", "/users/{username}").replace("/budgets/researcher",
                                                                           "/budgets/{username}")
            .replace("no-such-node", "{node_id}").replace("tabular-risk/1", "{name}/{version}")
            .replace("no-such-job", "{job_id}").replace("no-such-request", "{request_id}")
            .replace("999999", "{token_id}"))


def test_expected_matrix_matches_rbac() -> None:
    """The hand-written matrix and rbac.PERMISSIONS agree, route by route and role by role."""
    assert [(m, p) for m, p, *_ in EXPECTED] == [(m, p) for m, p, *_ in ENDPOINTS]
    for (method, path, _b, roles), (*_x, permission) in zip(EXPECTED, ENDPOINTS, strict=True):
        assert {r.value for r in Role if allowed(r.value, permission)} == roles, (method, path)


def test_nobody_mints_a_token_for_someone_else(sqlite_api: Api) -> None:
    """Separation of duties: there is no route that makes a token for another user (the admin's old
    ``POST /users/{u}/tokens``); an admin never gets a working researcher token, nor runs a query."""
    api = sqlite_api
    for role in (A, D, R, U):
        r = api.client.post("/api/v1/users/researcher/tokens", headers=api.h(role))
        assert r.status_code in (404, 405), (role, r.status_code, r.text)
        assert "token" not in r.text or r.status_code != 201
    r = api.client.post("/api/v1/queries/count", json={"by": ["modality"]}, headers=api.h(A))
    assert r.status_code == 403


def test_matrix_covers_every_user_route(tmp_path: Any) -> None:
    from incisive.platform.settings import PlatformSettings

    app = create_app(PlatformSettings(home=tmp_path))
    paths = app.openapi()["paths"]
    routes = {(m.upper(), p) for p, ops in paths.items() if p.startswith("/api/v1") for m in ops}
    listed = {(m, _template(p)) for m, p, _, _ in EXPECTED}
    assert routes - PUBLIC == listed
    assert {perm for *_, perm in ENDPOINTS} == set(PERMISSIONS)


@pytest.mark.parametrize("role", [*[r.value for r in Role], None])
def test_role_endpoint_matrix(sqlite_api: Api, role: str | None) -> None:
    api = sqlite_api
    api.client.post("/api/v1/nodes/invites", json={"name": "seed"}, headers=api.h("admin"))  # a node to exist
    for method, path, body, roles in EXPECTED:
        headers = api.h(role) if role else {}
        r = api.client.request(method, path, json=body, headers=headers)
        if role is None:
            assert r.status_code == 401, (method, path)
        elif role in roles:
            assert r.status_code not in (401, 403), (role, method, path, r.text)
            assert r.status_code < 500, (role, method, path, r.text)
        else:
            assert r.status_code == 403, (role, method, path, r.status_code)
        if path.endswith("/disable") and r.status_code == 200:  # put the account back for the next routes
            api.client.post(path.replace("/disable", "/enable"), headers=headers)


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

"""Property-based run of the served OpenAPI schema (schemathesis) past the door: no input makes the platform
answer 5xx (issue 17 item 5).

* every ``/api/v1`` operation is called with a token of a role that the hand-written RBAC matrix
  (``tests/platform/test_rbac.EXPECTED``, from docs/platform.md) lets through, so its inputs reach the route and
  not only the 401/403 of the permission check;
* every ``/agent/v1`` operation is signed with an enrolled test node's Ed25519 key over the exact bytes sent
  (method, path and query, body), so the fuzzed inputs reach the route behind the signature check;
* 50 examples per operation, derandomised (the same cases every run), against a live SQLite platform over HTTP.

The fixture's teardown fails when any operation only ever got statuses of the door (401, 403, 405, or FastAPI's
422 before the route): signing with another key makes every agent operation fail it.

Operations that can take away the test's own credentials (revoking tokens or nodes, disabling users) are
followed by a repair that re-issues what they revoked, so the later cases still get past the door; a check at the
end proves it (every role's token and the node's key still work)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from incisive.common import signing
from incisive.platform.app import create_app
from incisive.platform.home import Platform
from incisive.platform.rbac import Role
from incisive.platform.server import ThreadedServer
from incisive.platform.services import users
from incisive.platform.settings import PlatformSettings
from tests.platform.conftest import invite, make_platform
from tests.platform.test_rbac import EXPECTED, PUBLIC

schema = schemathesis.openapi.from_dict(create_app(PlatformSettings(home=Path("/nonexistent"))).openapi())
EXAMPLES = 50
# which role to use where several may call an operation: the one whose inputs reach the most code
PREFERENCE = ("researcher", "dp-manager", "admin", "auditor")
# where the preferred role would only meet the route's own ownership check (a researcher reads only their budget)
ROLE_OVERRIDE = {("GET", "/api/v1/budgets/{username}"): "auditor"}
# a status that does not show the inputs reached the route: refused at the door, a fuzzed method, or FastAPI's
# own validation of declared parameters (run before the route, so before the agent signature check)
DOOR = {401, 403, 405, 422}
# operations whose 422 is the route's own answer, after authentication (a run with a wrong node key or token
# gives 401 there instead): the fuzz never builds a valid bundle upload, FL job or job result for them
ROUTE_422 = {"POST /api/v1/models", "POST /api/v1/fl/jobs", "POST /agent/v1/jobs/{job_id}/result"}
# public operations whose door is a one-time secret the fuzz cannot know (an activation secret, an invite): they
# are fuzzed for 5xx like the others, and tested past the door in test_users.py / test_enrolment.py
SECRET_DOORS = {"POST /api/v1/activate", "POST /agent/v1/enrol"}
ROLE_NAMES = {"admin": "admin", "dp-manager": "dpmanager", "researcher": "researcher", "auditor": "auditor"}


def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")


def role_for(method: str, path: str) -> str | None:
    """The role the RBAC matrix lets call ``method path`` (a schema template); None for public routes."""
    if (method.upper(), path) in PUBLIC or path == "/agent/v1/enrol":  # enrolment: an invite, no token
        return None
    if (method.upper(), path) in ROLE_OVERRIDE:
        return ROLE_OVERRIDE[(method.upper(), path)]
    pattern = _template(path)
    for m, concrete, _body, roles in EXPECTED:
        if m == method.upper() and pattern.match(concrete):
            return next(r for r in PREFERENCE if r in roles)
    raise AssertionError(f"{method} {path} is not in the RBAC matrix of test_rbac.py")


class Live:
    def __init__(self, platform: Platform, url: str) -> None:
        self.platform, self.url = platform, url
        self.tokens: dict[str, str] = {}
        self.key = signing.generate_private_key()
        self.node_id, self.enrolments = "fuzz-node", 0
        self.http = httpx.Client(base_url=url, timeout=30)
        self.statuses: dict[str, set[int]] = {}  # operation -> every status the fuzz got
        with platform.db.session() as s:
            for role in Role:
                _user, self.tokens[role.value] = users.add_user(s, ROLE_NAMES[role.value], role.value, 1.0, "test")
        self.enrol()

    def enrol(self) -> None:
        """Enrol the test node (again under a new id, after a fuzzed revoke of the last one)."""
        if self.enrolments:
            self.node_id = f"fuzz-node-{self.enrolments}"
        self.enrolments += 1
        r = self.http.post("/agent/v1/enrol", json={"token": invite(self.platform, self.node_id),
                                                    "node_id": self.node_id,
                                                    "public_key": signing.public_key_b64(self.key)})
        assert r.status_code == 200, r.text

    def works(self, role: str) -> bool:
        return self.http.get("/api/v1/me", headers={"Authorization": f"Bearer {self.tokens[role]}"}).status_code \
            == 200

    def node_works(self) -> bool:
        return self.signed("GET", "/agent/v1/jobs?wait=0", b"").status_code == 200

    def signed(self, method: str, path_and_query: str, content: bytes, headers: dict[str, str] | None = None
               ) -> httpx.Response:
        h = dict(headers or {})
        h.update(signing.sign_headers(self.key, self.node_id, method, path_and_query, content))
        return self.http.request(method, path_and_query, content=content, headers=h)

    def repair(self) -> None:
        """Give back what a fuzzed revoke or disable took: enabled accounts, valid tokens, an enrolled node."""
        with self.platform.db.session() as s:
            for role in Role:
                name = ROLE_NAMES[role.value]
                users.set_disabled(s, name, False, "test")
        for role in Role:
            if not self.works(role.value):
                with self.platform.db.session() as s:
                    name = ROLE_NAMES[role.value]
                    self.tokens[role.value] = users.issue_token(s, users.get_user(s, name), "fuzz repair",
                                                                name)["token"]
        if not self.node_works():
            self.enrol()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    # short waits keep 50 examples per operation bounded; the throttle would answer 429 to fuzzed secrets
    # (tested in test_throttle.py), which would hide the routes behind it
    platform = make_platform(tmp_path_factory.mktemp("st") / "platform", query_timeout_s=0.3, long_poll_s=0.2,
                             auth_free_failures=1_000_000, auth_lockout_failures=1_000_000)
    server = ThreadedServer(platform.settings, platform.db).start()
    state = Live(platform, server.url)
    yield state
    assert all(state.works(r.value) for r in Role), "the fuzz run ended without a working token for some role"
    stuck = sorted(op for op, codes in state.statuses.items() if op not in SECRET_DOORS
                   and codes <= (DOOR - {422} if op in ROUTE_422 else DOOR))
    assert not stuck, f"operations whose fuzzed inputs never got past authentication: {stuck}"
    assert state.node_works(), "the fuzz run ended without a working node key"
    state.http.close()
    server.stop()
    platform.db.dispose()


def _agent_call(case: schemathesis.Case, live: Live) -> httpx.Response:
    """Send an /agent/v1 case signed over the exact bytes: the body serialised once, the query encoded once."""
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=live.url)
    if "json" in kwargs:
        content = json.dumps(kwargs.pop("json")).encode()
        headers = {"Content-Type": "application/json", **(kwargs.get("headers") or {})}
    else:
        data = kwargs.pop("data", None) or b""
        content = data.encode() if isinstance(data, str) else bytes(data)
        headers = dict(kwargs.get("headers") or {})
    request = live.http.build_request(kwargs["method"], kwargs["url"], params=kwargs.get("params"),
                                      content=content)
    headers.pop("Content-Length", None)
    return live.signed(kwargs["method"], request.url.raw_path.decode(), content, headers)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case: schemathesis.Case, live: Live) -> None:
    op = f"{case.operation.method.upper()} {case.operation.path}"
    if case.operation.path.startswith("/agent/v1/") and case.operation.path != "/agent/v1/enrol":
        response = _agent_call(case, live)
        live.statuses.setdefault(op, set()).add(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])
    else:
        role = role_for(case.operation.method, case.operation.path)  # case.method may be a fuzzed one (TRACE)
        headers = {} if role is None else {"Authorization": f"Bearer {live.tokens[role]}"}
        answer = case.call(base_url=live.url, headers=headers, timeout=30)
        live.statuses.setdefault(op, set()).add(answer.status_code)
        case.validate_response(answer, checks=[not_a_server_error])
    if any(word in case.operation.path for word in ("revoke", "disable")):
        live.repair()


def test_every_operation_gets_past_the_door(live: Live) -> None:
    """Signed agent requests and role tokens are accepted (not 401/403) on an operation of each kind, so the
    fuzz above reaches the routes."""
    assert live.signed("POST", "/agent/v1/heartbeat", b"{}", {"Content-Type": "application/json"}
                       ).status_code == 200
    r = live.http.post("/api/v1/queries/count", json={"by": ["modality"], "timeout_s": 0.2},
                       headers={"Authorization": f"Bearer {live.tokens['researcher']}"})
    assert r.status_code not in (401, 403), r.text
    r = live.http.post("/api/v1/inference", json={"model": "tabular-risk:1@no-such-job", "node": live.node_id},
                       headers={"Authorization": f"Bearer {live.tokens['researcher']}"})
    assert r.status_code not in (401, 403), r.text  # it used to be sent with an admin token: always 403

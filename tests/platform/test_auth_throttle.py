"""Failed authentication is throttled per source and per account, and audited as one aggregated entry per source
and window instead of one row per request (issue 16 item 4)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from fastapi.testclient import TestClient

from incisive.common import signing
from incisive.platform.app import create_app
from incisive.platform.home import Platform
from tests.platform.conftest import Api, FakeNode, enrol_fake, role_tokens


def _entries(platform: Platform) -> list[dict[str, Any]]:
    from incisive.platform.services import audit

    with platform.db.session() as s:
        return list(audit.entries(s))


def test_forged_agent_requests_are_throttled_and_aggregated(sqlite_platform: Platform) -> None:
    platform = sqlite_platform
    app = create_app(platform.settings, platform.db)
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(platform, client, role_tokens(platform))
        fake = enrol_fake(api)
        before = len(_entries(platform))
        forger = FakeNode(client, fake.node_id, signing.generate_private_key())
        codes: Counter[int] = Counter()
        retry_after = set()
        for _ in range(200):
            r = forger.send("POST", "/agent/v1/heartbeat", {"version": "1"})
            codes[r.status_code] += 1
            if r.status_code == 429:
                retry_after.add(int(r.headers["Retry-After"]))
        assert codes[429] >= 150, dict(codes)
        assert set(codes) <= {401, 429}, dict(codes)
        assert retry_after and min(retry_after) >= 1
        during = len(_entries(platform)) - before
        assert during <= 3, f"{during} audit rows for 200 forged requests"
    entries = _entries(platform)[before:]  # the app stopped: the window's summary is written
    assert len(entries) <= 4, [e["action"] for e in entries]
    agent = [e for e in entries if e["action"] == "agent.auth"]
    assert agent and all(e["outcome"] == "refused" for e in agent)
    total = sum(int(e["details"].get("failures", 0)) + int(e["details"].get("throttled", 0)) for e in agent)
    assert total == 200, [e["details"] for e in agent]
    assert not any(fake.node_id not in json.dumps(e["details"]) and e["node"] != fake.node_id for e in agent)


def test_bad_tokens_bad_invites_and_bad_activation_secrets_are_throttled(sqlite_api: Api) -> None:
    api = sqlite_api
    before = len(_entries(api.platform))
    codes = Counter(api.client.get("/api/v1/me", headers={"Authorization": f"Bearer inc_guess{i}"}).status_code
                    for i in range(60))
    assert codes[429] >= 40 and set(codes) <= {401, 429}, dict(codes)
    r = api.client.get("/api/v1/me", headers=api.h("researcher"))
    assert r.status_code == 429, "a source in back-off is refused even with a valid token (no oracle)"
    assert len(_entries(api.platform)) - before <= 2


def test_invites_and_activation_are_throttled(api: Api) -> None:
    key = signing.public_key_b64(signing.generate_private_key())
    codes = Counter(api.client.post("/agent/v1/enrol", json={"token": f"invite_guess{i}", "node_id": "x",
                                                             "public_key": key}).status_code for i in range(40))
    assert codes[429] >= 25 and set(codes) <= {401, 429}, dict(codes)


def test_activation_lockout_per_account(sqlite_platform: Platform) -> None:
    """Guesses at one account's activation secret lock that account after N failures, even when they come from
    many sources; the account's real secret is then refused too until the lockout ends."""
    from incisive.platform.services import users

    platform = sqlite_platform
    platform.settings = platform.settings.model_copy(update={"auth_free_failures": 3, "auth_lockout_failures": 6})
    with platform.db.session() as s:
        _user, secret = users.create_user(s, "vic", "researcher", 1.0, "test")
    app = create_app(platform.settings, platform.db)
    throttle = app.state.throttle
    for i in range(6):  # six sources, one guess each
        throttle.failed(f"10.0.0.{i}", "activation", "vic")
    assert throttle.retry_after("10.9.9.9", "vic") is None, "a source that never failed is not locked out"
    throttle.failed("10.9.9.9", "activation", "vic")
    assert throttle.retry_after("10.9.9.9", "vic") is not None
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/api/v1/activate", json={"username": "vic", "secret": "act_wrong"})
        r = client.post("/api/v1/activate", json={"username": "vic", "secret": secret})
        assert r.status_code in (401, 429)

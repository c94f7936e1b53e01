"""Invites, enrolment, signed agent requests: expired/used invites, forged and tampered signatures, replay,
revocation that cuts a node off at once."""

from __future__ import annotations

import threading
import time

from incisive.common import signing
from incisive.platform.home import Platform
from incisive.platform.models import SeenNonce
from incisive.platform.services import nodes
from tests.platform.conftest import Api, FakeNode, _api, enrol_fake, invite


def _enrol(api: Api, token: str, node_id: str = "hospital-b") -> int:
    key = signing.generate_private_key()
    return api.client.post("/agent/v1/enrol", json={"token": token, "node_id": node_id,
                                                    "public_key": signing.public_key_b64(key)}).status_code


def test_invite_is_one_time(api: Api) -> None:
    token = invite(api.platform)
    assert _enrol(api, token) == 200
    assert _enrol(api, token, "hospital-c") == 410


def test_expired_and_unknown_invites(api: Api) -> None:
    token = invite(api.platform, ttl_s=0.01)
    time.sleep(0.05)
    assert _enrol(api, token) == 410
    assert _enrol(api, "invite_forged") == 401


def test_bad_enrolment_fields(api: Api) -> None:
    assert _enrol(api, invite(api.platform), node_id="Bad Id!") == 422
    r = api.client.post("/agent/v1/enrol", json={"token": invite(api.platform), "node_id": "x",
                                                 "public_key": "AAAA"})
    assert r.status_code == 422
    enrol_fake(api, "dup")
    assert _enrol(api, invite(api.platform), node_id="dup") == 409


def test_invite_over_api_and_duplicate_use(api: Api) -> None:
    r = api.client.post("/api/v1/nodes/invites", json={"name": "Hospital Q"}, headers=api.h("admin"))
    assert r.status_code == 201
    assert _enrol(api, r.json()["token"]) == 200


def test_signed_requests_verify(api: Api) -> None:
    fake = enrol_fake(api)
    assert fake.send("POST", "/agent/v1/heartbeat", {"version": "1"}).status_code == 200
    assert fake.send("GET", "/agent/v1/jobs?wait=0").status_code == 200


def test_forged_signature_refused(api: Api) -> None:
    fake = enrol_fake(api)
    impostor = FakeNode(api.client, fake.node_id, signing.generate_private_key())
    assert impostor.send("POST", "/agent/v1/heartbeat", {"version": "1"}).status_code == 401
    unknown = FakeNode(api.client, "nobody", signing.generate_private_key())
    assert unknown.send("GET", "/agent/v1/jobs?wait=0").status_code == 401
    assert api.client.get("/agent/v1/jobs?wait=0").status_code == 401  # unsigned


def test_tampering_refused(api: Api) -> None:
    fake = enrol_fake(api)
    content, headers = fake.signed("POST", "/agent/v1/heartbeat", {"version": "1"})
    tampered = content.replace(b'"1"', b'"2"')
    assert api.client.post("/agent/v1/heartbeat", content=tampered, headers=headers).status_code == 401
    content, headers = fake.signed("GET", "/agent/v1/jobs?wait=0")
    assert api.client.get("/agent/v1/jobs?wait=1", headers=headers).status_code == 401  # other query string
    content, headers = fake.signed("POST", "/agent/v1/heartbeat", {"version": "1"})
    headers[signing.TIMESTAMP_HEADER] = str(int(headers[signing.TIMESTAMP_HEADER]) + 1)
    assert api.client.post("/agent/v1/heartbeat", content=content, headers=headers).status_code == 401
    headers = dict(headers, **{signing.NONCE_HEADER: "zz"})
    assert api.client.post("/agent/v1/heartbeat", content=content, headers=headers).status_code == 401


def test_replay_refused(api: Api) -> None:
    fake = enrol_fake(api)
    content, headers = fake.signed("POST", "/agent/v1/heartbeat", {"version": "1"})
    assert api.client.post("/agent/v1/heartbeat", content=content, headers=headers).status_code == 200
    r = api.client.post("/agent/v1/heartbeat", content=content, headers=headers)
    assert r.status_code == 401 and "replay" in r.json()["detail"]


def test_stale_timestamp_refused(api: Api) -> None:
    fake = enrol_fake(api)
    window = api.platform.settings.signature_window_s
    old = fake.send("POST", "/agent/v1/heartbeat", {}, now=time.time() - window - 5)
    future = fake.send("POST", "/agent/v1/heartbeat", {}, now=time.time() + window + 5)
    assert old.status_code == 401 and future.status_code == 401


def test_nonces_are_pruned(api: Api) -> None:
    fake = enrol_fake(api)
    fake.send("POST", "/agent/v1/heartbeat", {})
    with api.platform.db.session() as s:
        assert nodes.prune_nonces(s, -1000) >= 1
        assert s.query(SeenNonce).count() == 0


def test_revocation_cuts_off_at_once(api: Api) -> None:
    fake = enrol_fake(api)
    assert fake.send("GET", "/agent/v1/jobs?wait=0").status_code == 200
    r = api.client.post(f"/api/v1/nodes/{fake.node_id}/revoke", headers=api.h("admin"))
    assert r.status_code == 200
    assert fake.send("GET", "/agent/v1/jobs?wait=0").status_code == 403
    assert fake.send("POST", "/agent/v1/heartbeat", {}).status_code == 403
    listed = api.client.get("/api/v1/nodes", headers=api.h("admin")).json()
    assert listed[0]["status"] == "revoked"
    lines = api.client.get("/api/v1/audit/export", headers=api.h("auditor")).text
    assert '"node.revoke"' in lines and '"agent.auth"' in lines


def test_invite_token_never_stored_or_audited(api: Api) -> None:
    token = invite(api.platform)
    _enrol(api, token)
    export = api.client.get("/api/v1/audit/export", headers=api.h("auditor")).text
    assert token not in export
    if api.platform.db.dialect == "sqlite":
        assert token.encode() not in (api.platform.home / "platform.db").read_bytes()


def test_revocation_refuses_a_waiting_long_poll_at_once(platform: Platform) -> None:
    """Two agents of one node are blocked in 20 s long-polls (the platform holds polls up to 30 s, its wake-up
    tick is 5 s): both get 403 within 2 s of the revoke, well before any tick or the end of the wait."""
    platform.settings = platform.settings.model_copy(update={"long_poll_s": 30.0})
    api_iter = _api(platform)
    api = next(api_iter)
    try:
        fake = enrol_fake(api)
        hub = api.client.app.state.hub  # type: ignore[attr-defined]
        answers: list[tuple[int, float]] = []

        def poll() -> None:
            r = fake.send("GET", "/agent/v1/jobs?wait=20")
            answers.append((r.status_code, time.monotonic()))

        waiters = [threading.Thread(target=poll, daemon=True) for _ in range(2)]
        for t in waiters:
            t.start()
        deadline = time.monotonic() + 30
        while hub._waiters.get(fake.node_id, 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hub._waiters.get(fake.node_id, 0) == 2, "the long-polls never started waiting"
        time.sleep(0.2)  # both are inside the wait now
        revoked_at = time.monotonic()
        assert api.client.post(f"/api/v1/nodes/{fake.node_id}/revoke", headers=api.h("admin")).status_code == 200
        for t in waiters:
            t.join(25)
        assert len(answers) == 2
        assert [code for code, _ in answers] == [403, 403]
        late = max(at for _, at in answers) - revoked_at
        assert late < 2.0, f"a waiting long-poll was refused {late:.1f} s after the revoke"
    finally:
        api_iter.close()

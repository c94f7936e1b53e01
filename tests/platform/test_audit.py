"""Hash-chained audit logs on the platform (table) and the node (JSON lines): verify catches edits, removals,
reordering and a cut tail; export; the CLI's exit code; no PHI or secrets in entries."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import delete, update
from typer.testing import CliRunner

from incisive.cli import app
from incisive.common.audit import make_entry, verify_chain
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import InputError
from incisive.platform.home import Platform
from incisive.platform.models import AuditEntry
from incisive.platform.services import audit
from tests.platform.conftest import Api

runner = CliRunner()


def _chain(n: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    prev_seq, prev_hash = 0, "0" * 64
    for i in range(n):
        e = make_entry(prev_seq, prev_hash, "alice", "query.count", target=f"q{i}", details={"i": i})
        out.append(e)
        prev_seq, prev_hash = int(e["seq"]), str(e["hash"])  # type: ignore[call-overload]
    return out


def test_chain_detects_each_kind_of_change() -> None:
    entries = _chain(5)
    head = (5, str(entries[-1]["hash"]))
    assert verify_chain(entries, head).ok
    edited = [dict(e) for e in entries]
    edited[2]["outcome"] = "denied"
    assert not verify_chain(edited, head).ok
    removed = entries[:2] + entries[3:]
    assert not verify_chain(removed, head).ok
    reordered = [entries[0], entries[2], entries[1], *entries[3:]]
    assert not verify_chain(reordered, head).ok
    assert not verify_chain(entries[:-1], head).ok  # tail cut
    rehashed = [dict(e) for e in entries]  # edited and re-hashed: the next link breaks
    rehashed[1]["actor"] = "mallory"
    rehashed[1]["hash"] = make_entry(1, str(entries[0]["hash"]), "mallory", "query.count", target="q1",
                                     details={"i": 1}, ts=str(entries[1]["ts"]))["hash"]
    assert not verify_chain(rehashed, head).ok


def test_platform_log_verify_and_tamper(platform: Platform) -> None:
    with platform.db.session() as s:
        for i in range(4):
            audit.append(s, "admin", "user.add", target=f"u{i}")
    with platform.db.session() as s:
        assert audit.verify(s).ok
    with platform.db.session() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor="someone-else"))
    with platform.db.session() as s:
        result = audit.verify(s)
        assert not result.ok and "entry 2" in result.problems[0]
    with platform.db.session() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor="admin"))
        assert audit.verify(s).ok
        s.execute(delete(AuditEntry).where(AuditEntry.seq == 3))
    with platform.db.session() as s:
        assert not audit.verify(s).ok


def test_platform_audit_cli(tmp_path: Path) -> None:
    platform = Platform.init(tmp_path / "p")
    with platform.db.session() as s:
        audit.append(s, "admin", "node.invite", target="Hospital A")
        audit.append(s, "admin", "node.revoke", target="Hospital A")
    ok = runner.invoke(app, ["audit", "verify", "--platform", str(platform.home), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"]
    out = tmp_path / "audit.jsonl"
    assert runner.invoke(app, ["audit", "export", "--platform", str(platform.home), "--out", str(out)]).exit_code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2] and verify_chain(lines, (2, lines[-1]["hash"])).ok
    with platform.db.session() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 1).values(target="Hospital B"))
    bad = runner.invoke(app, ["audit", "verify", "--platform", str(platform.home)])
    assert bad.exit_code == 1 and "edited" in bad.stdout
    assert isinstance(runner.invoke(app, ["audit", "verify"]).exception, InputError)
    platform.db.dispose()


def test_node_log_verify_and_tamper(sqlite_node: object, tmp_path: Path) -> None:
    home = sqlite_node.home  # type: ignore[attr-defined]
    log = NodeAudit(home)
    for i in range(4):
        log.append("researcher:rita", "job.count", target=f"job{i}", outcome="ok")
    assert runner.invoke(app, ["audit", "verify", "--node", str(home)]).exit_code == 0
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[2], lines[1], lines[3]]) + "\n")  # reordered
    assert runner.invoke(app, ["audit", "verify", "--node", str(home)]).exit_code == 1
    log.path.write_text("\n".join(lines[:3]) + "\n")  # tail cut
    assert not log.verify().ok
    log.path.write_text("\n".join([*lines[:3], lines[3].replace("job3", "job9")]) + "\n")  # edited
    assert not log.verify().ok
    log.path.write_text("\n".join(lines) + "\n")
    assert log.verify().ok
    exported = runner.invoke(app, ["audit", "export", "--node", str(home)])
    assert exported.exit_code == 0 and len(exported.stdout.splitlines()) == 4


def test_api_export_and_verify_hold_no_secrets(api: Api) -> None:
    r = api.client.post("/api/v1/users", json={"username": "bob", "role": "researcher"}, headers=api.h("admin"))
    secret = r.json()["activation_secret"]
    token = api.client.post("/api/v1/activate", json={"username": "bob", "secret": secret}).json()["token"]
    invite = api.client.post("/api/v1/nodes/invites", json={"name": "H"}, headers=api.h("admin")).json()["token"]
    verify = api.client.get("/api/v1/audit/verify", headers=api.h("auditor")).json()
    assert verify["ok"] and verify["entries"] > 5
    export = api.client.get("/api/v1/audit/export", headers=api.h("admin")).text
    assert token not in export and invite not in export and secret not in export
    assert all(json.loads(line)["hash"] for line in export.splitlines())


def _threaded_hits(url: str, token: str, n: int) -> list[int]:
    import concurrent.futures

    import httpx

    def hit(_i: int) -> int:
        return httpx.get(url + "/api/v1/users", headers={"Authorization": f"Bearer {token}"}, timeout=120).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=25) as pool:
        return list(pool.map(hit, range(n)))


def test_concurrent_denials_all_audited(platform: Platform) -> None:
    """100 concurrent denied requests against a real server: 100 answers of 403, 100 entries, a valid chain
    (before issue 16 on SQLite some answered 500 and left no entry)."""
    from incisive.platform.server import ThreadedServer
    from incisive.platform.services import users

    with platform.db.session() as s:
        token = users.add_user(s, "rhea", "researcher", 1.0, "test")[1]
    server = ThreadedServer(platform.settings, platform.db).start()
    try:
        codes = _threaded_hits(server.url, token, 100)
    finally:
        server.stop()
    assert codes == [403] * 100, sorted(set(codes))
    with platform.db.session() as s:
        denied = [e for e in audit.entries(s) if e["action"] == "access.denied"]
        assert len(denied) == 100
        assert audit.verify(s).ok


def test_epsilon_underflow_is_refused_and_audited(api: Api) -> None:
    """ε = 1e-310 (a denormal: 1/ε overflows) answered 500 with no audit entry; now a clean 422 with an entry."""
    from tests.platform.conftest import enrol_fake

    enrol_fake(api)
    r = api.client.post("/api/v1/queries/count", json={"by": ["modality"], "epsilon": 1e-310, "timeout_s": 0.5},
                        headers=api.h("researcher"))
    assert r.status_code == 422, r.text
    export = [json.loads(line) for line in
              api.client.get("/api/v1/audit/export", headers=api.h("auditor")).text.splitlines()]
    refused = [e for e in export if e["action"] == "query.count" and e["outcome"] == "refused"]
    assert refused and refused[-1]["details"]["rule"] == "invalid_query"


def test_every_500_still_writes_its_entry(api: Api, monkeypatch: object) -> None:
    import pytest

    from incisive.platform.services import nodes

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("injected failure")

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setattr(nodes, "list_nodes", broken)
    r = api.client.get("/api/v1/nodes", headers=api.h("dp-manager"))
    assert r.status_code == 500 and "injected" not in r.text
    export = [json.loads(line) for line in
              api.client.get("/api/v1/audit/export", headers=api.h("auditor")).text.splitlines()]
    errors = [e for e in export if e["action"] == "request.error"]
    assert errors and errors[-1]["actor"] == "dpmanager" and errors[-1]["target"] == "/api/v1/nodes"
    assert errors[-1]["details"]["error"] == "RuntimeError"

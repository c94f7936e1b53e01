"""Platform accounts (issue 16 item 1): one-time activation secrets, tokens a user makes for themself (expiring,
listed by id, revocable), disabled accounts, budgets that belong to a person, every change audited."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update
from typer.testing import CliRunner

from incisive.cli import app
from incisive.platform.models import ApiToken
from incisive.platform.services import utcnow
from tests.platform.conftest import Api

runner = CliRunner()


def _create(api: Api, username: str, role: str = "researcher", person: str | None = None) -> Any:
    body = {"username": username, "role": role, **({"person": person} if person else {})}
    return api.client.post("/api/v1/users", json=body, headers=api.h("admin"))


def _activate(api: Api, username: str, secret: str) -> Any:
    return api.client.post("/api/v1/activate", json={"username": username, "secret": secret})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _audit(api: Api) -> list[dict[str, Any]]:
    text = api.client.get("/api/v1/audit/export", headers=api.h("auditor")).text
    return [e for e in (json.loads(line) for line in text.splitlines()) if "seq" in e]


def test_new_user_gets_a_one_time_activation_secret(api: Api) -> None:
    r = _create(api, "rosa")
    assert r.status_code == 201, r.text
    data = r.json()
    assert "token" not in data, "the admin must not receive a working token for the new user"
    secret = data["activation_secret"]
    assert _activate(api, "rosa", "act_forged").status_code == 401
    first = _activate(api, "rosa", secret)
    assert first.status_code == 200, first.text
    token = first.json()["token"]
    assert api.client.get("/api/v1/me", headers=_bearer(token)).json()["username"] == "rosa"
    assert _activate(api, "rosa", secret).status_code in (401, 410)  # one use
    if api.platform.db.dialect == "sqlite":
        raw = (api.platform.home / "platform.db").read_bytes()
        assert secret.encode() not in raw and token.encode() not in raw
    export = api.client.get("/api/v1/audit/export", headers=api.h("auditor")).text
    assert secret not in export and token not in export
    actions = [(e["action"], e["target"], e["outcome"]) for e in _audit(api)]
    assert ("user.add", "rosa", "ok") in actions and ("user.activate", "rosa", "ok") in actions


def test_tokens_expire_are_listed_and_revoked(api: Api) -> None:
    secret = _create(api, "tom").json()["activation_secret"]
    first = _activate(api, "tom", secret).json()
    token = first["token"]
    expires = first["expires_at"]
    days = api.platform.settings.token_ttl_days
    assert days == 90
    second = api.client.post("/api/v1/me/tokens", json={"label": "laptop"}, headers=_bearer(token))
    assert second.status_code == 201, second.text
    other = second.json()["token"]
    listed = api.client.get("/api/v1/me/tokens", headers=_bearer(other)).json()
    assert len(listed) == 2 and {t["label"] for t in listed} >= {"laptop"}
    for t in listed:
        assert set(t) >= {"id", "created_at", "expires_at", "last_used_at", "revoked_at"}
        assert token not in json.dumps(t) and other not in json.dumps(t)
    assert any(t["expires_at"] == expires for t in listed)
    used = [t for t in listed if t["last_used_at"]]
    assert used, "the token in use shows when it was last used"
    first_id = next(t["id"] for t in listed if t["label"] != "laptop")
    r = api.client.post(f"/api/v1/me/tokens/{first_id}/revoke", headers=_bearer(other))
    assert r.status_code == 200
    assert api.client.get("/api/v1/me", headers=_bearer(token)).status_code == 401
    assert api.client.get("/api/v1/me", headers=_bearer(other)).status_code == 200
    # someone else's token id cannot be revoked through /me
    mine = api.client.get("/api/v1/me/tokens", headers=api.h("researcher")).json()[0]["id"]
    assert api.client.post(f"/api/v1/me/tokens/{mine}/revoke", headers=_bearer(other)).status_code == 404
    with api.platform.db.session() as s:  # an expired token is refused
        s.execute(update(ApiToken).where(ApiToken.id == second.json()["id"])
                  .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert api.client.get("/api/v1/me", headers=_bearer(other)).status_code == 401
    actions = [e["action"] for e in _audit(api) if e.get("target") == "tom"]
    assert actions.count("token.create") == 2 and "token.revoke" in actions


def test_disable_and_enable(api: Api) -> None:
    r = api.client.post("/api/v1/users/researcher/disable", headers=api.h("admin"))
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert api.client.get("/api/v1/me", headers=api.h("researcher")).status_code == 401
    assert api.client.post("/api/v1/me/tokens", headers=api.h("researcher")).status_code == 401
    r = api.client.post("/api/v1/users/researcher/enable", headers=api.h("admin"))
    assert r.status_code == 200 and r.json()["disabled"] is False
    assert api.client.get("/api/v1/me", headers=api.h("researcher")).status_code == 200
    assert api.client.post("/api/v1/users/admin/disable", headers=api.h("admin")).status_code == 422  # not oneself
    listed = api.client.get("/api/v1/users/researcher/tokens", headers=api.h("admin")).json()
    assert listed and all("token" not in t and "token_hash" not in t for t in listed)
    r = api.client.post(f"/api/v1/users/researcher/tokens/{listed[0]['id']}/revoke", headers=api.h("admin"))
    assert r.status_code == 200
    assert api.client.get("/api/v1/me", headers=api.h("researcher")).status_code == 401
    actions = [e["action"] for e in _audit(api) if e["target"] == "researcher"]
    assert {"user.disable", "user.enable", "token.revoke"} <= set(actions)


def test_admins_never_hold_the_researcher_role(api: Api) -> None:
    assert _create(api, "ada", "admin", person="ada@example.org").status_code == 201
    r = _create(api, "ada-r", "researcher", person="ada@example.org")
    assert r.status_code == 409 and "admin" in r.json()["detail"]
    assert _create(api, "rex", "researcher", person="rex@example.org").status_code == 201
    assert _create(api, "rex-a", "admin", person="rex@example.org").status_code == 409


def test_budget_belongs_to_the_person_not_the_account(api: Api) -> None:
    """Spend, disable the account, make a new account for the same person: the budget is not reset; a user name
    is never reused, and one person has at most one enabled account."""
    r = _create(api, "rita", person="rita@example.org")
    token = _activate(api, "rita", r.json()["activation_secret"]).json()["token"]
    assert api.client.put("/api/v1/budgets/rita", json={"budget": 1.0, "project": "p1"},
                          headers=api.h("dp-manager")).status_code == 200
    with api.platform.db.session() as s:
        from incisive.platform.services import users

        account = users.budget_account(s, users.get_user(s, "rita"), "p1")
        account.spent, account.exhausted = 1.0, True
    assert _create(api, "rita2", person="rita@example.org").status_code == 409  # rita is still enabled
    assert api.client.post("/api/v1/users/rita/disable", headers=api.h("admin")).status_code == 200
    assert api.client.get("/api/v1/me", headers=_bearer(token)).status_code == 401
    assert _create(api, "rita", person="someone@example.org").status_code == 409  # the name is reserved
    r = _create(api, "rita2", person="rita@example.org")
    assert r.status_code == 201, r.text
    _activate(api, "rita2", r.json()["activation_secret"])
    budgets = api.client.get("/api/v1/budgets/rita2", headers=api.h("dp-manager")).json()
    p1 = next(p for p in budgets["projects"] if p["project"] == "p1")
    assert p1["spent"] == 1.0 and p1["exhausted"] is True


def test_cli_user_and_token_commands(tmp_path: Path) -> None:
    home = str(tmp_path / "p")
    assert runner.invoke(app, ["platform", "init", home]).exit_code == 0
    r = runner.invoke(app, ["platform", "user", "create", "alice", "--role", "researcher", "--person",
                            "alice@example.org", "--home", home, "--json"])
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    assert "token" not in created and created["activation_secret"].startswith("act_")
    r = runner.invoke(app, ["platform", "token", "activate", "alice", "--secret", created["activation_secret"],
                            "--home", home, "--json"])
    assert r.exit_code == 0, r.output
    token = json.loads(r.stdout)
    assert token["token"].startswith("inc_")
    r = runner.invoke(app, ["platform", "token", "list", "--user", "alice", "--home", home, "--json"])
    listed = json.loads(r.stdout)
    assert [t["id"] for t in listed] == [token["id"]] and token["token"] not in r.stdout
    assert runner.invoke(app, ["platform", "token", "revoke", str(token["id"]), "--user", "alice", "--home",
                               home]).exit_code == 0
    assert json.loads(runner.invoke(app, ["platform", "token", "list", "--user", "alice", "--home", home,
                                          "--json"]).stdout)[0]["revoked_at"]
    assert runner.invoke(app, ["platform", "user", "disable", "alice", "--home", home]).exit_code == 0
    users = json.loads(runner.invoke(app, ["platform", "user", "list", "--home", home, "--json"]).stdout)
    assert users[0]["disabled"] is True and users[0]["person"] == "alice@example.org"
    assert runner.invoke(app, ["platform", "user", "enable", "alice", "--home", home]).exit_code == 0
    assert runner.invoke(app, ["platform", "user", "token", "alice", "--home", home]).exit_code != 0  # gone


def test_cli_tokens_against_a_running_platform(tmp_path: Path) -> None:
    """A user activates their account and manages their own tokens over HTTP (``--platform URL``)."""
    from incisive.platform.server import ThreadedServer
    from tests.platform.conftest import make_platform

    platform = make_platform(tmp_path / "p")
    secret = runner.invoke(app, ["platform", "user", "create", "bea", "--role", "researcher", "--home",
                                 str(platform.home), "--json"])
    server = ThreadedServer(platform.settings, platform.db).start()
    try:
        url = server.url
        r = runner.invoke(app, ["platform", "token", "activate", "bea", "--secret",
                                json.loads(secret.stdout)["activation_secret"], "--platform", url, "--json"])
        assert r.exit_code == 0, r.output
        token = json.loads(r.stdout)["token"]
        r = runner.invoke(app, ["platform", "token", "create", "--label", "ci", "--platform", url, "--token", token,
                                "--json"])
        assert r.exit_code == 0, r.output
        second = json.loads(r.stdout)
        r = runner.invoke(app, ["platform", "token", "list", "--platform", url, "--token", token, "--json"])
        assert sorted(t["label"] for t in json.loads(r.stdout)) == ["activation", "ci"]
        r = runner.invoke(app, ["platform", "token", "revoke", str(second["id"]), "--platform", url, "--token",
                                token])
        assert r.exit_code == 0, r.output
    finally:
        server.stop()
        platform.db.dispose()


def test_migration_0004_keeps_accounts_tokens_and_budgets(tmp_path: Path, platform_db_url: str) -> None:
    """A platform at revision 0003 with a user, a token and a budget: after the upgrade the user's person is their
    name, the token still works and expires in 90 days, the budget is the person's."""
    from alembic import command
    from sqlalchemy import text

    from incisive.common.db import alembic_config
    from incisive.platform.db import MIGRATIONS, PlatformDb
    from incisive.platform.services import token_hash, users

    db = PlatformDb(platform_db_url or f"sqlite:///{tmp_path / 'p.db'}")
    cfg = alembic_config(MIGRATIONS)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO user_account (id, username, role, created_at, disabled, dp_budget, dp_spent) "
                          "VALUES (1, 'old', 'researcher', :t, false, 2.0, 0.5)"), {"t": now})
        conn.execute(text("INSERT INTO api_token (user_id, token_hash, label, created_at) VALUES (1, :h, 'x', :t)"),
                     {"h": token_hash("inc_old"), "t": now})
        conn.execute(text("INSERT INTO privacy_budget (user_id, project, budget, spent, exhausted, updated_at) "
                          "VALUES (1, 'p1', 2.0, 0.5, false, :t)"), {"t": now})
    db.migrate()
    try:
        with db.session() as s:
            user = users.authenticate(s, "inc_old")
            assert user.person == "old" and user.activated_at is not None
            token = users.list_tokens(s, "old")[0]
            assert token["expires_at"] is not None
            p1 = next(p for p in users.budgets(s, "old")["projects"] if p["project"] == "p1")
            assert p1["spent"] == 0.5
    finally:
        db.dispose()

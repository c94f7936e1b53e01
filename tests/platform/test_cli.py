"""``incisive platform …`` and ``incisive query …`` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from incisive.cli import app
from incisive.common.errors import ConfigError
from incisive.platform.home import Platform
from incisive.platform.server import ThreadedServer
from tests.platform.conftest import FakeNode, make_platform

runner = CliRunner()


def test_init_users_invite_nodes(tmp_path: Path) -> None:
    home = str(tmp_path / "p")
    assert runner.invoke(app, ["platform", "init", home]).exit_code == 0
    assert isinstance(runner.invoke(app, ["platform", "init", home]).exception, ConfigError)
    r = runner.invoke(app, ["platform", "user", "create", "alice", "--role", "researcher", "--home", home, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["activation_secret"].startswith("act_") and "token" not in json.loads(r.stdout)
    assert runner.invoke(app, ["platform", "user", "create", "bob", "--role", "god", "--home", home]).exit_code != 0
    r = runner.invoke(app, ["platform", "user", "list", "--home", home, "--json"])
    assert [u["username"] for u in json.loads(r.stdout)] == ["alice"]
    assert runner.invoke(app, ["platform", "user", "token", "alice", "--home", home]).exit_code != 0  # gone
    r = runner.invoke(app, ["platform", "node", "invite", "Hospital A", "--home", home, "--json"])
    assert json.loads(r.stdout)["token"].startswith("invite_")
    r = runner.invoke(app, ["platform", "nodes", "--home", home, "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == []
    assert runner.invoke(app, ["platform", "nodes", "--home", home]).exit_code == 0
    assert runner.invoke(app, ["platform", "migrate", "--home", home]).exit_code == 0
    assert isinstance(runner.invoke(app, ["platform", "nodes", "--home", str(tmp_path)]).exception, ConfigError)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Platform, ThreadedServer]]:
    p = make_platform(tmp_path / "platform")
    server = ThreadedServer(p.settings, p.db).start()
    yield p, server
    server.stop()
    p.db.dispose()


def test_query_cli_against_a_live_platform(live: tuple[Platform, ThreadedServer]) -> None:
    p, server = live
    home = str(p.home)
    secret = json.loads(runner.invoke(app, ["platform", "user", "create", "rita", "--role", "researcher", "--home",
                                            home, "--json"]).stdout)["activation_secret"]
    token = json.loads(runner.invoke(app, ["platform", "token", "activate", "rita", "--secret", secret, "--platform",
                                           server.url, "--json"]).stdout)["token"]
    r = runner.invoke(app, ["query", "count", "--by", "modality", "--url", server.url, "--token", token, "--json"])
    assert r.exception is not None and "no enrolled nodes" in str(r.exception)
    r = runner.invoke(app, ["query", "count", "--by", "nope", "--url", server.url, "--token", token])
    assert r.exception is not None and "422" in str(r.exception)
    r = runner.invoke(app, ["query", "count", "--by", "modality", "--url", server.url, "--token", "inc_bad"])
    assert r.exception is not None and "401" in str(r.exception)
    r = runner.invoke(app, ["query", "count", "--by", "modality", "--url", server.url])
    assert r.exception is not None


def test_exchange_delivers_and_acks(sqlite_api: object) -> None:
    from tests.platform.conftest import Api, enrol_fake

    api: Api = sqlite_api  # type: ignore[assignment]
    fake: FakeNode = enrol_fake(api)
    r = fake.send("POST", "/agent/v1/exchange?wait=0", {"results": {"f" * 32: {"status": "ok", "result": {}}}})
    assert r.status_code == 200 and r.json() == {"acked": ["f" * 32], "jobs": []}  # unknown job: dropped
    assert fake.send("POST", "/agent/v1/exchange?wait=0", {"results": "x"}).status_code == 422

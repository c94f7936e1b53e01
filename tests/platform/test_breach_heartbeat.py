"""An open personal-data breach travels with the agent's heartbeat: a real platform (HTTP, SQLite and PostgreSQL)
and a real node agent; the platform's node list (service, CLI table and --json) shows the open breach with its
72 h deadline and the hours left, OVERDUE once it passed unnotified, and nothing once it is closed. A heartbeat
with a malformed breach entry is refused whole (422) and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from incisive.cli import app
from incisive.common import output
from incisive.node.agent import Agent
from incisive.node.agent_link import enrol
from incisive.node.compliance import breach
from incisive.node.home import Node
from incisive.platform.home import Platform
from incisive.platform.server import ThreadedServer
from incisive.platform.services import nodes
from tests.node.test_agent import Running, fast_settings, wait_for
from tests.platform.conftest import Api, enrol_fake, invite, make_platform

runner = CliRunner()


@pytest.fixture
def live(tmp_path: Path, platform_db_url: str) -> Iterator[tuple[Platform, ThreadedServer]]:
    p = make_platform(tmp_path / "platform", platform_db_url)
    server = ThreadedServer(p.settings, p.db).start()
    yield p, server
    server.stop()
    p.db.dispose()


def listed(p: Platform) -> dict[str, Any]:
    with p.db.session() as s:
        [row] = nodes.list_nodes(s, 60)
    return row


def cli_nodes(p: Platform) -> tuple[list[dict[str, Any]], str]:
    r = runner.invoke(app, ["platform", "nodes", "--home", str(p.home), "--json"])
    assert r.exit_code == 0, r.output
    table = runner.invoke(app, ["platform", "nodes", "--home", str(p.home)])
    assert table.exit_code == 0, table.output
    return json.loads(r.stdout), table.output


def test_open_breach_shows_on_the_platform_node_list(live: tuple[Platform, ThreadedServer], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "_width", 300)  # the whole table on one line per node
    p, server = live
    node = Node.init(tmp_path / "node", provider="Breach Hospital")
    enrol(node, server.url, invite(p, "Breach Hospital"))
    now = datetime.now(UTC)
    running = Running(Agent(node, fast_settings(node)))
    try:
        wait_for(lambda: listed(p)["last_heartbeat"], what="a first heartbeat")
        assert listed(p)["breach"] is None and listed(p)["breaches"] == []
        assert "open," not in cli_nodes(p)[1]

        first = breach.open_breach(node, "Export sent to the wrong partner", discovered=now - timedelta(hours=5))
        row = wait_for(lambda: (r := listed(p))["breach"] and r, what="the breach on the platform")
        assert row["breaches"] == [{"id": first["id"], "deadline": first["deadline"],
                                    "hours_left": pytest.approx(67, abs=0.2), "notified": False}]
        assert row["breach"] == {"open": 1, "unnotified": 1, "deadline": first["deadline"],
                                 "hours_left": pytest.approx(67, abs=0.2), "overdue": False}
        rows, table = cli_nodes(p)
        assert rows[0]["breach"]["deadline"] == first["deadline"] and not rows[0]["breach"]["overdue"]
        assert "breach" in table and "1 open, 67 h left" in table

        late = breach.open_breach(node, "Found a stolen backup disk late", discovered=now - timedelta(hours=80))
        row = wait_for(lambda: (r := listed(p))["breach"]["open"] == 2 and r, what="the second breach")
        assert row["breach"]["overdue"] and row["breach"]["deadline"] == late["deadline"]
        assert row["breach"]["hours_left"] == pytest.approx(-8, abs=0.2)
        assert "2 open, OVERDUE" in cli_nodes(p)[1]

        # the late one notified (with its reasons), the first one notified: nothing awaits the authority
        breach.update_breach(node, late["id"], dpa_notified_at=datetime.now(UTC), delay_reason="found after 80 h")
        breach.update_breach(node, first["id"], dpa_notified_at=datetime.now(UTC))
        row = wait_for(lambda: (r := listed(p))["breach"]["unnotified"] == 0 and r, what="both notified")
        assert row["breach"] == {"open": 2, "unnotified": 0, "deadline": None, "hours_left": None, "overdue": False}
        assert "2 open, notified" in cli_nodes(p)[1]

        for bid in (first["id"], late["id"]):
            breach.close_breach(node, bid, measures="partner deleted the data; disk was encrypted")
        row = wait_for(lambda: (r := listed(p))["breach"] is None and r, what="the breaches closed")
        assert row["breaches"] == [] and "open," not in cli_nodes(p)[1]
    finally:
        running.stop()
        node.catalogue.dispose()
    assert running.error is None, running.error


def test_malformed_breach_heartbeat_refused(sqlite_api: Api) -> None:
    fake = enrol_fake(sqlite_api)
    good = {"id": "br-2026-12-01-1a2b", "deadline": "2026-12-04T09:00:00Z", "hours_left": 3.5, "notified": False}
    assert fake.send("POST", "/agent/v1/heartbeat", {"version": "t", "breaches": [good]}).status_code == 200
    for bad in ({**good, "id": "../../x"}, {**good, "deadline": "soon"}, {**good, "summary": "free text"},
                {**good, "hours_left": "many"}):
        r = fake.send("POST", "/agent/v1/heartbeat", {"version": "t", "breaches": [bad]})
        if "summary" in bad:  # an unknown key is dropped, never stored
            assert r.status_code == 200
            continue
        assert r.status_code == 422, (bad, r.text)
    r = fake.send("POST", "/agent/v1/heartbeat", {"version": "t", "breaches": [good] * 51})
    assert r.status_code == 422
    with sqlite_api.platform.db.session() as s:
        [row] = nodes.list_nodes(s, 60)
    assert row["breaches"] == [good] and row["breach"]["deadline"] == good["deadline"]
    assert row["breach"]["overdue"] == (datetime.now(UTC) > datetime(2026, 12, 4, 9, tzinfo=UTC))

"""The agent's heartbeat says whether bundle code can be caged (ok / off / unavailable) and the platform's node
list shows it (real platform over HTTP, a real node, a signed heartbeat)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from incisive.node.agent import Agent
from incisive.node.agent_link import enrol
from incisive.node.home import Node
from incisive.node.policy import update_policy
from incisive.platform.home import Platform
from incisive.platform.server import ThreadedServer
from incisive.platform.services import nodes
from tests.node.test_agent import fast_settings
from tests.platform.conftest import invite, make_platform


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Platform, ThreadedServer, Node]]:
    p = make_platform(tmp_path / "platform")
    server = ThreadedServer(p.settings, p.db).start()
    node = Node.init(tmp_path / "node", provider="Sandbox Hospital")
    enrol(node, server.url, invite(p, "Sandbox Hospital"))
    yield p, server, node
    node.catalogue.dispose()
    server.stop()
    p.db.dispose()


def listed_sandbox(p: Platform, node: Node) -> object:
    agent = Agent(node, fast_settings(node))
    try:
        agent.heartbeat()
    finally:
        agent.client.close()
        agent.state.close()
    with p.db.session() as s:
        return next(n for n in nodes.list_nodes(s, 60) if n["node_id"] == node.settings.node_id)["sandbox"]


def test_heartbeat_reports_the_sandbox(served: tuple[Platform, ThreadedServer, Node], bwrap_ready: None,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    p, _, node = served
    assert listed_sandbox(p, node) == {"state": "ok"}
    update_policy(node.home, sandbox_mode="off")
    off = listed_sandbox(p, node)
    assert isinstance(off, dict) and off["state"] == "off"
    update_policy(node.home, sandbox_mode="bwrap")
    monkeypatch.setattr("incisive.node.agent.sandbox_unavailable", lambda mode: "bubblewrap not installed")
    assert listed_sandbox(p, node) == {"state": "unavailable", "reason": "bubblewrap not installed"}

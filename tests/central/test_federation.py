"""Federation of a Central Node: two tenants, each enrolled as its own node, served by one central agent process
(here one :class:`CentralAgent` in a thread), answer the platform's counts exactly as two separate nodes with the
same data do; each tenant answers from its own catalogue only, under its own policy, and writes its own audit."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from incisive.central.agent import CentralAgent, enrol_tenant, enrolled
from incisive.central.home import Central
from incisive.central.tenants import add_tenant
from incisive.common.audit_log import NodeAudit
from incisive.node.agent import Agent
from incisive.node.agent_link import enrol
from incisive.node.home import Node
from incisive.platform.server import ThreadedServer
from incisive.platform.services import nodes, users
from tests.node.test_agent import Running, wait_for
from tests.platform.conftest import invite, make_platform
from tests.platform.federation import fill_attack_cohort

FAST_AGENT = {"INCISIVE_AGENT_HEARTBEAT_S": "0.5", "INCISIVE_AGENT_POLL_WAIT_S": "1",
              "INCISIVE_AGENT_BACKOFF_BASE_S": "0.05", "INCISIVE_AGENT_BACKOFF_MAX_S": "0.3",
              "INCISIVE_AGENT_READINESS_INTERVAL_S": "0"}
QUERIES: list[dict[str, Any]] = [
    {"by": ["sex"]}, {"by": ["cancer_type"]}, {"by": ["modality"], "unit": "studies"},
    {"by": ["age_band"], "where": {"sex": "F"}}, {"by": ["sex", "cancer_type"]},
]


def _answer(url: str, token: str, query: dict[str, Any], node_ids: list[str]) -> dict[str, Any]:
    r = httpx.post(url + "/api/v1/queries/count", json={**query, "nodes": node_ids}, timeout=60,
                   headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    # node ids differ; what each node answered (its status) and the combined table must not
    return {k: data[k] for k in ("cells", "total", "suppressed", "margins") if k in data} | {
        "statuses": sorted(str(v) for v in data["nodes"].values())}


@pytest.mark.slow
def test_two_tenants_answer_exactly_as_two_separate_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST_AGENT.items():
        monkeypatch.setenv(name, value)
    p = make_platform(tmp_path / "platform", "", require_dp=False)
    server = ThreadedServer(p.settings, p.db).start()
    running: list[Running] = []
    central_agent: CentralAgent | None = None
    thread: threading.Thread | None = None
    try:
        with p.db.session() as s:
            token = users.add_user(s, "rita", "researcher", 1.0, "test")[1]
        own: list[Node] = []
        for prefix, name in (("A", "Hospital A"), ("B", "Hospital B")):
            node = Node.init(tmp_path / name.replace(" ", "-"), provider=name)
            fill_attack_cohort(node, prefix=prefix)
            enrol(node, server.url, invite(p, name))
            own.append(node)
            running.append(Running(Agent(node)))
        central = Central.init(tmp_path / "central", country="DE", provider="Hosting GmbH", region="eu-central")
        tenants = []
        for prefix, name in (("A", "Hospital D"), ("B", "Hospital E")):
            record, _manager = add_tenant(central, name, country="IT", contact=f"IT lead <it@{prefix}.example>")
            fill_attack_cohort(central.tenant_node(record.id), prefix=prefix)
            enrol_tenant(central, record.id, server.url, invite(p, name))
            tenants.append(record.id)
        assert sorted(enrolled(central)) == sorted(tenants)
        central_agent = CentralAgent(central, sweep_s=0.5)
        thread = threading.Thread(target=central_agent.run, daemon=True)
        thread.start()

        def online() -> bool:
            with p.db.session() as s:
                listed = nodes.list_nodes(s, 60)
            return len(listed) == 4 and all(n["status"] == "online" for n in listed)

        wait_for(online, 90, "two nodes and two tenants online")
        own_ids = [n.settings.node_id for n in own]
        tenant_ids = [central.tenant_node(t).settings.node_id for t in tenants]
        assert len(set(own_ids + tenant_ids)) == 4  # four identities at the platform
        for query in QUERIES:
            assert _answer(server.url, token, query, tenant_ids) == _answer(server.url, token, query, own_ids), query
        # one tenant alone gives its own data only (the Hospital D tenant holds the prefix-A cohort)
        alone = _answer(server.url, token, {"by": ["sex"]}, tenant_ids[:1])
        assert alone == _answer(server.url, token, {"by": ["sex"]}, own_ids[:1])
        # each tenant's jobs are in its own audit chain, not the other's
        for t in tenants:
            counted = [e for e in NodeAudit(central.tenant_node(t).home).entries() if e["action"] == "job.count"]
            assert len(counted) == len(QUERIES) + (1 if t == tenants[0] else 0)
            assert {e["node"] for e in counted} == {central.tenant_node(t).settings.node_id}
        assert all(s["alive"] for s in central_agent.status())
    finally:
        if central_agent is not None:
            central_agent.stop()
        if thread is not None:
            thread.join(30)
        for r in running:
            r.stop()
        server.stop()
        p.db.dispose()

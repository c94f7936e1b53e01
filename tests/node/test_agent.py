"""The node agent against a real platform over HTTP (uvicorn on a free port, agent in a thread)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from incisive.common.audit_log import NodeAudit
from incisive.common.protocol import Job as AgentJob
from incisive.common.protocol import JobType
from incisive.node import aggregates
from incisive.node.agent import Agent, AgentRevoked, backoff_delay, run_job
from incisive.node.agent_link import AgentSettings, LinkError, enrol
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom
from incisive.node.policy import update_policy
from incisive.platform.home import Platform
from incisive.platform.models import Job, JobResult
from incisive.platform.server import ThreadedServer
from incisive.platform.services import nodes, users, utcnow
from tests.platform.conftest import invite, make_platform


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def fast_settings(node: Node, **extra: Any) -> AgentSettings:
    base = AgentSettings.load(node.home)
    return base.model_copy(update={"heartbeat_s": 0.5, "poll_wait_s": 1.0, "backoff_base_s": 0.05,
                                   "backoff_max_s": 0.3, "readiness_interval_s": 0, **extra})


@pytest.fixture(scope="module")
def filled_home(tmp_path_factory: pytest.TempPathFactory, cohort: Path) -> Path:
    home = tmp_path_factory.mktemp("agentnode") / "node"
    node = Node.init(home, provider="Agent Hospital")
    import_dicom(node, cohort / "dicom", workers=1)
    import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
    node.catalogue.dispose()
    return home


@pytest.fixture
def node(filled_home: Path, tmp_path: Path) -> Iterator[Node]:
    import shutil

    home = tmp_path / "node"
    shutil.copytree(filled_home, home)
    n = Node.open(home)
    yield n
    n.catalogue.dispose()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[Platform, ThreadedServer]]:
    p = make_platform(tmp_path / "platform")
    server = ThreadedServer(p.settings, p.db).start()
    yield p, server
    server.stop()
    p.db.dispose()


class Running:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.agent.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(15)


def researcher(p: Platform) -> str:
    with p.db.session() as s:
        return users.add_user(s, "rita", "researcher", 5.0, "test")[1]


def test_backoff_grows_with_jitter_and_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 1.0, 8.0, rng) for n in range(1, 30)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert max(delays[:1]) <= 1.0 and max(delays[5:]) > 2.0
    assert len({round(d, 6) for d in delays}) > 20  # jitter: not a fixed schedule


def test_enrol_then_query_round_trip(node: Node, platform: tuple[Platform, ThreadedServer]) -> None:
    p, server = platform
    data = enrol(node, server.url, invite(p, "Agent Hospital"))
    assert data["node_id"] == node.settings.node_id
    assert (node.home / "secrets" / "agent.key").stat().st_mode & 0o777 == 0o600
    running = Running(Agent(node, fast_settings(node)))
    try:
        wait_for(lambda: _heartbeat(p), what="a heartbeat")
        token = researcher(p)
        r = httpx.post(server.url + "/api/v1/queries/count", json={"by": ["modality"]},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["nodes"] == {node.settings.node_id: "ok"}
        with node.catalogue.session() as s:
            truth = aggregates.count(s, ["modality"], None, "patients", 1)
        expected = {tuple(c["key"]): c["count"] for c in truth["cells"]}
        for cell in body["cells"]:
            true = expected[tuple(cell["key"])]
            assert cell["count"] == (true if true >= 5 else None)
        listed = httpx.get(server.url + "/api/v1/nodes", headers={"Authorization": f"Bearer {token}"}).json()
        assert listed[0]["status"] == "online" and listed[0]["data"]["patients"] > 0
        assert listed[0]["disk_free_bytes"] > 0 and listed[0]["version"]
        actions = [e["action"] for e in NodeAudit(node.home).entries()]
        assert "node.enrol" in actions and "job.count" in actions
        assert NodeAudit(node.home).verify().ok
    finally:
        running.stop()
    assert running.error is None


def _heartbeat(p: Platform) -> bool:
    with p.db.session() as s:
        return any(n["last_heartbeat"] for n in nodes.list_nodes(s, 60))


def test_job_runs_at_most_once_and_result_is_redelivered(node: Node,
                                                         platform: tuple[Platform, ThreadedServer]) -> None:
    p, server = platform
    enrol(node, server.url, invite(p))
    agent = Agent(node, fast_settings(node))
    job = {"id": "a" * 32, "type": "count", "payload": {"by": ["sex"], "k": 5, "requester": "rita"}}
    with p.db.session() as s:  # the platform knows the job, so the result can be acknowledged
        s.add(Job(id=job["id"], node_id=node.settings.node_id, kind="count", payload=job["payload"],
                  status="delivered", created_at=utcnow(), expires_at=utcnow(), deliveries=1))
    calls = []
    original = aggregates.count

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    aggregates.count = counting  # type: ignore[assignment]
    try:
        agent.handle(job)
        agent.handle(job)  # delivered twice: must not run twice
        assert len(calls) == 1
        server.stop()  # platform down: the result stays queued
        with pytest.raises(LinkError):
            agent.deliver()
        assert len(agent.state.undelivered()) == 1
        server2 = ThreadedServer(p.settings.model_copy(update={"port": server.port}), p.db).start()
        try:
            agent.deliver()
            assert agent.state.undelivered() == []
            with p.db.session() as s:
                assert s.get(JobResult, job["id"]) is not None
        finally:
            server2.stop()
    finally:
        aggregates.count = original  # type: ignore[assignment]
        agent.client.close()
        agent.state.close()


def test_interrupted_job_is_not_rerun(node: Node, platform: tuple[Platform, ThreadedServer]) -> None:
    p, server = platform
    enrol(node, server.url, invite(p))
    agent = Agent(node, fast_settings(node))
    agent.state.begin("b" * 32, "count", time.time())  # as if the node crashed while running it
    agent.handle({"id": "b" * 32, "type": "count", "payload": {"by": ["sex"]}})
    ((_job_id, result),) = agent.state.undelivered()
    assert result["status"] == "error" and "not run again" in result["error"]
    agent.state.close()
    agent.client.close()


def test_revoked_node_is_cut_off(node: Node, platform: tuple[Platform, ThreadedServer]) -> None:
    p, server = platform
    enrol(node, server.url, invite(p))
    running = Running(Agent(node, fast_settings(node)))
    wait_for(lambda: _heartbeat(p), what="a heartbeat")
    with p.db.session() as s:
        nodes.revoke(s, node.settings.node_id, "test")
    running.thread.join(15)
    assert not running.thread.is_alive()
    assert running.error is None or isinstance(running.error, AgentRevoked)


def test_policy_refusals_happen_on_the_node(node: Node) -> None:
    job = {"id": "c" * 32, "type": "count", "payload": {"by": ["modality"], "k": 2, "requester": "rita",
                                                        "project": "p1"}}
    update_policy(node.home, participate=False)
    assert run_job(node, job)["status"] == "refused"
    update_policy(node.home, participate=True, researchers=["bob"])
    assert run_job(node, job)["status"] == "refused"
    update_policy(node.home, researchers=[], projects=["p2"])
    assert run_job(node, job)["status"] == "refused"
    update_policy(node.home, projects=[], job_types=["summary"])
    assert run_job(node, job)["status"] == "refused"
    update_policy(node.home, job_types=["count", "summary"], min_cell_count=50)
    result = run_job(node, job)  # the job asked for k=2; the node's k=50 wins
    assert result["status"] == "ok" and result["result"]["k"] == 50
    assert all(c["count"] is None for c in result["result"]["cells"])


def test_heartbeat_health_has_readiness_and_backup(node: Node, platform: tuple[Platform, ThreadedServer]) -> None:
    p, server = platform
    enrol(node, server.url, invite(p))
    agent = Agent(node, fast_settings(node, readiness_interval_s=3600))
    try:
        health = agent.health()
    finally:
        agent.client.close()
        agent.state.close()
    assert health["readiness"]["profile"] and "fail" in health["readiness"]
    assert "backup_age_days" in health and health["disk_free_bytes"] > 0
    assert health["data"]["patients"] > 0 and health["policy"]["min_cell_count"] == 5


def test_run_job_computes_only_aggregates_and_refuses_unknown_types(node: Node) -> None:
    """Before the one protocol module, every job type that was not ``count`` ran as a ``summary``."""
    infer = run_job(node, {"id": "j1", "type": "infer", "payload": {"metric": "rows", "k": 5}})
    assert infer["status"] == "refused" and "not a federated aggregate" in infer["error"]
    bogus = run_job(node, {"id": "j2", "type": "bogus", "payload": {"metric": "rows", "k": 5}})
    assert bogus == {"status": "refused", "result": None,
                     "error": "unknown job type 'bogus'; this node runs count, summary, fl-supernode, fl-stop, infer"}
    assert run_job(node, {"id": "j3", "type": "summary", "payload": {"metric": "rows", "k": 1}})["status"] == "ok"


def test_agent_dispatch_table_has_every_job_type_and_refuses_others(
        node: Node, platform: tuple[Platform, ThreadedServer]) -> None:
    p, server = platform
    enrol(node, server.url, invite(p))
    agent = Agent(node, fast_settings(node))
    try:
        assert set(agent.handlers) == set(JobType)
        refused = agent.dispatch(AgentJob(id="x1", type="fl-start-everything"))
        assert refused.status == "refused" and refused.error is not None
        assert refused.error.startswith("unknown job type 'fl-start-everything'")
        agent.handle({"id": "x2", "type": "bogus", "payload": {}})
        assert dict(agent.state.undelivered())["x2"]["status"] == "refused"
        stop = agent.dispatch(AgentJob(id="x3", type="fl-stop", payload={"fl_job": "none"}))
        assert stop.body() == {"status": "ok", "result": {"stopped": False}, "error": None}
    finally:
        agent.client.close()
        agent.state.close()
        agent.overlap.close()

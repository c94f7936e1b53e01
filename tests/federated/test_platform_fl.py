"""Integration: training through the platform. A real platform (uvicorn, port 0) owns the SuperLink; four nodes,
each with a real agent, three of which approved ``tabular-risk``; the agents start real ``flower-supernode``
processes on the platform's ``fl-supernode`` jobs. The fourth node refuses (recorded), rounds, metrics, the final
model and its provenance land in the platform database, and what the platform received holds no rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from incisive.federated.bundle import Registry, bundle_digest, load_task, shipped_bundle
from incisive.federated.remote import Platform as Remote
from incisive.node.agent import Agent
from incisive.node.agent_link import AgentSettings, enrol
from incisive.node.fl import approval
from incisive.node.fl.data import NodeData
from incisive.node.home import Node
from incisive.platform.home import Platform
from incisive.platform.models import FlJob, TrainedModel
from incisive.platform.server import ThreadedServer
from incisive.platform.services import users
from tests.platform.conftest import invite

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("flower")]
FAST_PLATFORM = {"port": 0, "long_poll_s": 2.0, "redeliver_s": 5.0, "fl_start_timeout_s": 90.0,
                 "fl_job_timeout_s": 600.0}
FAST_AGENT = {"poll_wait_s": 2.0, "heartbeat_s": 1.0, "readiness_interval_s": 0.0, "backoff_base_s": 0.1,
              "backoff_max_s": 0.5}
ALLOWED = {"node", "n", "loss", "accuracy", "auc", "neg", "pos", "train_seconds", "dp_epsilon", "refused"}


class Federation:
    def __init__(self, platform: Platform, server: ThreadedServer, nodes: dict[str, Node], admin: str,
                 researcher: str) -> None:
        self.platform, self.server, self.nodes = platform, server, nodes
        self.admin, self.researcher = Remote(server.url, admin), Remote(server.url, researcher)
        self.agents: dict[str, Agent] = {}
        self.threads: list[threading.Thread] = []

    def start_agents(self) -> None:
        for name, node in self.nodes.items():
            agent = Agent(node, AgentSettings.load(node.home).model_copy(update=FAST_AGENT))
            thread = threading.Thread(target=agent.run, name=f"agent-{name}", daemon=True)
            thread.start()
            self.agents[name], self.threads = agent, [*self.threads, thread]

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        for thread in self.threads:
            thread.join(20)


@pytest.fixture
def federation(make_nodes, tmp_path: Path) -> Iterator[Federation]:  # type: ignore[no-untyped-def]
    nodes = make_nodes(4, "non-iid", 1)
    platform = Platform.init(tmp_path / "platform")
    platform.settings = platform.settings.model_copy(update=FAST_PLATFORM)
    with platform.db.session() as s:
        admin = users.add_user(s, "ada", "admin", 1.0, "test")[1]
        researcher = users.add_user(s, "rita", "researcher", 1.0, "test")[1]
    server = ThreadedServer(platform.settings, platform.db).start()
    fed = Federation(platform, server, nodes, admin, researcher)
    try:
        for node in nodes.values():
            enrol(node, server.url, invite(platform, node.settings.provider))
        fed.start_agents()
        yield fed
    finally:
        fed.stop()
        server.stop()
        platform.db.dispose()


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_train_through_the_platform(federation: Federation, tmp_path: Path) -> None:
    fed = federation
    record = fed.admin.register(shipped_bundle("tabular-risk"), "tabular-risk", "1")
    assert record["created"] and record["sha256"] == bundle_digest(shipped_bundle("tabular-risk"))
    local = Registry(tmp_path / "dpm").register(shipped_bundle("tabular-risk"))  # what each DP manager reviewed
    approved = {k: n for k, n in fed.nodes.items() if k != "hospital-d"}
    for node in approved.values():
        approval.approve(node.home, local)
    ids = {k: n.settings.node_id for k, n in fed.nodes.items()}

    def online() -> bool:
        rows = fed.admin.call("GET", "/api/v1/nodes")
        return len(rows) == 4 and all(r["status"] == "online" for r in rows)
    _wait(online, 60, "four agents online")

    started = time.monotonic()
    job = fed.researcher.start("train", "tabular-risk:1", None, rounds=5, round_timeout=120.0)
    assert job["status"] == "queued" and set(job["nodes"]) == set(ids.values())
    rounds_seen: list[int] = []
    final = fed.researcher.follow(job["id"], lambda j: rounds_seen.append(len(j.get("rounds") or [])),
                                  interval=1.0, timeout=540)
    elapsed = time.monotonic() - started
    assert final["status"] == "completed", final
    assert any(0 < n < 10 for n in rounds_seen)  # rounds were mirrored while the job ran, not only at the end

    # refusal recorded: the node that did not approve the bundle never started a SuperNode
    refused = final["nodes"][ids["hospital-d"]]
    assert refused["status"] == "refused" and "not approved" in refused["reason"]
    assert {final["nodes"][ids[k]]["status"] for k in approved} == {"accepted"}
    assert not fed.agents["hospital-d"].fl.running

    # rounds and metrics in the platform database
    fits = [r for r in final["rounds"] if r["phase"] == "fit"]
    evals = [r for r in final["rounds"] if r["phase"] == "evaluate"]
    assert len(fits) == 5 and all(len(r["nodes"]) == 3 and not r["failures"] for r in fits)
    assert len(evals) == 5 and evals[-1]["pooled"]["auc"] > 0.9
    with fed.platform.db.session() as s:
        row = s.get(FlJob, job["id"])
        assert row is not None and row.flower_run_id and len(row.rounds) == 10
        trained = s.query(TrainedModel).filter_by(fl_job_id=job["id"]).one()
        weights = trained.weights
    prov = trained.provenance
    assert set(prov["nodes"]) == {ids[k] for k in approved}
    assert all(v["train_examples"] > 0 and v["fit_rounds"] == 5 for v in prov["nodes"].values())
    assert prov["rounds"] == 5 and prov["strategy"] == "fedavg" and prov["sha256"] == record["sha256"]
    assert prov["privacy"] == {"dp_epsilon": None, "dp_delta": 1e-5, "secagg": False}
    assert "not approved" in prov["refused"][ids["hospital-d"]]
    described = fed.researcher.call("GET", "/api/v1/models/tabular-risk/1")
    assert [t["job"] for t in described["trained"]] == [job["id"]]
    assert len(weights) < 5000  # 30 weights + bias in an .npz

    # what the platform received: parameters and scalar metrics only, no rows, no pseudonyms
    job_dir = fed.platform.home / "fl" / "jobs" / job["id"]
    from incisive.federated.jobs import Job

    received = Job(job_dir).received()
    assert received
    for r in received:  # per aggregated result, and (where recorded) per message as it came over the wire
        arrays, size = r.get("tensors", r.get("arrays")), r.get("bytes", r.get("array_bytes"))
        assert arrays in (0, 2) and size < 2000, r  # 31 float32 + headers; 569 rows x 30 would be > 100 kB
        assert set(r.get("metrics", r.get("configs", []))) <= ALLOWED | {"code", "message"}, r
    path = shipped_bundle("tabular-risk")
    import json

    manifest = json.loads((path / "manifest.json").read_text())
    task = load_task(path, bundle_digest(path))
    stored = b"".join(p.read_bytes() for p in fed.platform.home.rglob("*") if p.is_file())
    for node in fed.nodes.values():
        for key in task.load_data(NodeData(node), manifest, "all").keys[:20]:
            assert key.encode() not in stored

    # the platform told the agents to stop their SuperNodes
    _wait(lambda: not any(fed.agents[k].fl.running for k in approved), 30, "SuperNodes stopped")
    print(f"platform FL job: 5 rounds x 3 nodes in {elapsed:.1f} s")

    # federated evaluation of the trained model on the same SuperLink (reused), new SuperNodes
    started = time.monotonic()
    ev = fed.researcher.start("evaluate", f"tabular-risk:1@{job['id']}", [ids[k] for k in approved],
                              round_timeout=120.0)
    done = fed.researcher.follow(ev["id"], interval=1.0, timeout=240)
    assert done["status"] == "completed", done
    assert [r["phase"] for r in done["rounds"]] == ["evaluate"]
    assert abs(done["rounds"][0]["pooled"]["auc"] - evals[-1]["pooled"]["auc"]) < 1e-6  # same model, same rows
    assert done["provenance"]["source_job"] == job["id"]
    print(f"platform FL evaluation: {time.monotonic() - started:.1f} s")

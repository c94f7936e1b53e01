"""Integration: inference through the platform. A real platform (uvicorn, port 0; its database SQLite and
PostgreSQL), three nodes built from the synthetic cohort, each with a real agent; a lesion-cnn model trained
briefly at a fourth node is recorded in the platform's registry as a training job's model (no Flower run needed for
that). ``incisive infer --platform``:

* hospital-a approved the bundle and shares inference summaries: the summary comes back;
* hospital-b approved it with the default policy: inference runs there, the summary is withheld;
* hospital-c did not approve it: refused, nothing runs; a policy without the ``infer`` job type refuses too.

Results rows and SRs exist at the nodes; the platform's job results hold the summary and nothing else."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from incisive.cli import app
from incisive.federated.bundle import Registry, shipped_bundle
from incisive.federated.jobs import Job as LocalJob
from incisive.node.agent import Agent
from incisive.node.agent_link import AgentSettings, enrol
from incisive.node.catalogue.models import InferenceResult, Instance, Series
from incisive.node.fl import approval
from incisive.node.home import Node
from incisive.node.policy import update_policy
from incisive.platform.home import Platform
from incisive.platform.models import Job, JobResult
from incisive.platform.server import ThreadedServer
from incisive.platform.services import users
from tests.federated.conftest import load_cohort, quick_lesion_weights
from tests.platform.conftest import invite
from tests.platform.test_inference import add_trained_model

pytestmark = pytest.mark.slow
runner = CliRunner()
FAST_PLATFORM = {"port": 0, "long_poll_s": 2.0, "redeliver_s": 60.0}
FAST_AGENT = {"poll_wait_s": 2.0, "heartbeat_s": 1.0, "readiness_interval_s": 0.0, "backoff_base_s": 0.1,
              "backoff_max_s": 0.5}
SUMMARY_KEYS = {"model", "job", "run", "items", "series", "positive", "threshold", "histogram", "k"}


@dataclass
class Setup:
    platform: Platform
    url: str
    researcher: str
    nodes: dict[str, Node]
    job_id: str


def _weights(tmp: Path, cohort: Path) -> bytes:
    """lesion-cnn trained for a few epochs at one node (the model of a training job)."""
    bundle = Registry(tmp / "train-ws").register(shipped_bundle("lesion-cnn"))
    weights = quick_lesion_weights(bundle.path, bundle.digest, tmp / "train-node", cohort)
    (tmp / "trained").mkdir()
    (tmp / "trained" / "job.json").write_text("{}")
    job = LocalJob(tmp / "trained")
    job.save_model(weights)
    return job.model_path.read_bytes()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def platform_db(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def setup(tmp_path: Path, cohort: Path, platform_db: str) -> Iterator[Setup]:
    platform = Platform.init(tmp_path / "platform", db_url=platform_db)
    platform.settings = platform.settings.model_copy(update=FAST_PLATFORM)
    with platform.db.session() as s:
        researcher = users.add_user(s, "rita", "researcher", 1.0, "test")[1]
    job_id = add_trained_model(platform, shipped_bundle("lesion-cnn"), _weights(tmp_path, cohort))
    reviewed = Registry(tmp_path / "dpm").register(shipped_bundle("lesion-cnn"))  # what the DP managers reviewed
    nodes = {}
    for letter in "abc":
        node = Node.init(tmp_path / f"node-{letter}", provider=f"Hospital {letter.upper()}")
        load_cohort(node, cohort)
        nodes[node.settings.node_id] = node
    approval.approve(nodes["hospital-a"].home, reviewed, share_inference_summary=True)
    update_policy(nodes["hospital-a"].home, min_cell_count=1)  # exact counts, to compare with the node's rows
    approval.approve(nodes["hospital-b"].home, reviewed)  # default policy: summaries withheld
    server = ThreadedServer(platform.settings, platform.db).start()
    agents, threads = [], []
    try:
        for node in nodes.values():
            enrol(node, server.url, invite(platform, node.settings.provider))
            agent = Agent(node, AgentSettings.load(node.home).model_copy(update=FAST_AGENT))
            thread = threading.Thread(target=agent.run, name=f"agent-{node.settings.node_id}", daemon=True)
            thread.start()
            agents.append(agent)
            threads.append(thread)
        yield Setup(platform, server.url, researcher, nodes, job_id)
    finally:
        for agent in agents:
            agent.stop()
        for thread in threads:
            thread.join(20)
        server.stop()
        platform.db.dispose()
        for node in nodes.values():
            node.catalogue.dispose()


def _infer(st: Setup, node_id: str, *extra: str) -> tuple[int, str]:
    r = runner.invoke(app, ["infer", "--model", f"lesion-cnn:1@{st.job_id}", "--node-id", node_id,
                            "--platform", st.url, "--token", st.researcher, "--timeout", "120", *extra])
    return r.exit_code, r.output


def _rows(node: Node) -> list[InferenceResult]:
    with node.catalogue.session() as s:
        return list(s.scalars(select(InferenceResult)))


def test_infer_through_the_platform(setup: Setup) -> None:
    st = setup
    a, b, c = (st.nodes[f"hospital-{x}"] for x in "abc")

    # shared: the node's policy allows the summary
    code, out = _infer(st, "hospital-a", "--json")
    assert code == 0, out
    shared = json.loads(out)
    assert shared["status"] == "completed" and shared["node"] == "hospital-a"
    assert shared["result"]["shared"] is True
    summary = shared["result"]["summary"]
    assert set(summary) == SUMMARY_KEYS and summary["k"] == 1 and summary["job"] == st.job_id
    rows_a = _rows(a)
    assert rows_a and {r.run_id for r in rows_a} == {summary["run"]}
    assert summary["items"] == len(rows_a) and summary["positive"] == sum(r.positive for r in rows_a)
    assert sum(summary["histogram"]["counts"]) == len(rows_a)
    assert summary["series"] == len({r.series_uid for r in rows_a}) and all(r.sr_sop_uid for r in rows_a)
    with a.catalogue.session() as s:
        srs = set(s.scalars(select(Instance.sop_uid).join(Series).where(Series.modality == "SR")))
    assert srs == {r.sr_sop_uid for r in rows_a}  # the SRs are in the node's store and catalogue

    # withheld: inference ran at the node, nothing of it came back
    code, out = _infer(st, "hospital-b")
    assert code == 0, out
    assert "withheld by node policy" in out and "completed" in out
    assert _rows(b)

    # refused: not approved (nothing ran), and a policy without the infer job type
    code, out = _infer(st, "hospital-c", "--json")
    assert code == 1
    refused = json.loads(out)
    assert refused["status"] == "refused" and "not approved" in refused["error"] and refused["result"] is None
    assert _rows(c) == []
    update_policy(b.home, job_types=["count", "summary"])
    code, out = _infer(st, "hospital-b", "--json")
    assert code == 1 and "job type 'infer' not accepted" in json.loads(out)["error"]

    # what the platform got back: the summary and nothing else (no UIDs, no per-item scores)
    with st.platform.db.session() as s:
        answers = [(job.node_id, res.body) for job, res in s.execute(
            select(Job, JobResult).join(JobResult, JobResult.job_id == Job.id).where(Job.kind == "infer"))]
    assert len(answers) == 4
    for node_id, body in answers:
        assert set(body) <= {"status", "result", "error"}, body
        if body["status"] == "ok":
            assert set(body["result"]) == {"shared", "summary"}
            assert body["result"]["summary"] == "withheld by node policy" or set(body["result"]["summary"]) \
                == SUMMARY_KEYS, node_id
    identifiers = {v for n in st.nodes.values() for r in _rows(n)
                   for v in (r.series_uid, r.sop_uid, r.sr_sop_uid) if v}
    with a.catalogue.session() as s:
        identifiers |= set(s.scalars(select(Instance.sop_uid)))
    dumped = json.dumps([body for _, body in answers])
    assert identifiers and not [u for u in identifiers if u in dumped]
    assert not any(f"{r.score:.6f}"[:8] in dumped for r in rows_a if 0.01 < r.score < 0.99)
    stored = b"".join(p.read_bytes() for p in st.platform.home.rglob("*") if p.is_file())
    assert not [u for u in identifiers if u.encode() in stored]  # nor anywhere in the platform's files

    # a series filter goes through the platform to the node
    first = sorted({r.series_uid for r in rows_a if r.series_uid})[0]
    code, out = _infer(st, "hospital-a", "--series", first, "--json")
    assert code == 0, out
    one = json.loads(out)["result"]["summary"]
    assert one["series"] == 1 and one["items"] == sum(1 for r in rows_a if r.series_uid == first)

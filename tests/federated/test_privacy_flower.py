"""Privacy options end to end through real Flower processes: SecAgg+ (the server only ever sees masked vectors and
their sum) and DP-SGD (each node reports the epsilon it spent, within the job's target). One SuperLink and three
SuperNodes serve both jobs (short: tabular-risk, 2 rounds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from incisive.federated import engine, partition
from incisive.federated.bundle import RegisteredBundle, shipped_bundle
from incisive.federated.deploy import Federation
from incisive.federated.service import JobOptions, Workspace, train
from incisive.node.fl import approval
from incisive.node.fl.data import NodeData
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from tests.federated.test_flower import _task

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("flower")]


class Setup:
    def __init__(self, root: Path) -> None:
        self.ws = Workspace(root / "ws")
        self.bundle: RegisteredBundle = self.ws.registry.register(shipped_bundle("tabular-risk"), "tabular-risk",
                                                                  "1")
        x, y, names = partition.breast_cancer()
        self.nodes: dict[str, Node] = {}
        for i, idx in enumerate(partition.partition(y, 3, "iid", seed=3)):
            node = Node.init(root / f"node-{i}", provider=f"Hospital {chr(65 + i)}")
            import_clinical(node, partition.write_csv(root / f"part-{i}.csv", x, y, names, idx, f"P{i}-"))
            approval.approve(node.home, self.bundle)
            self.nodes[f"hospital-{chr(97 + i)}"] = node
        self.fed = Federation(root / "fed")

    def auc(self, weights: list[np.ndarray]) -> float:
        manifest, task = _task()
        tests = [task.load_data(NodeData(n), manifest, "test") for n in self.nodes.values()]
        model = task.build_model(manifest)
        engine.set_weights(model, weights)
        return float(engine.evaluate(model, np.concatenate([d.x for d in tests]),
                                     np.concatenate([d.y for d in tests]))["auc"])

    def train(self, opts: JobOptions):  # type: ignore[no-untyped-def]
        return train(self.ws, "tabular-risk:1", {k: n.home for k, n in self.nodes.items()}, opts,
                     federation=self.fed, timeout=600)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    s = Setup(tmp_path_factory.mktemp("privacy"))
    with s.fed:
        s.fed.start_superlink()
        for name, n in s.nodes.items():
            s.fed.start_supernode(name, n.home)
        yield s
    for n in s.nodes.values():
        n.catalogue.dispose()


def test_secagg_server_sees_only_masked_vectors_and_their_sum(setup: Setup) -> None:
    job = setup.train(JobOptions(rounds=2, secagg=True, round_timeout=120))
    assert job.spec["status"] == "completed", job.spec
    assert job.spec["privacy"]["secagg"] is True
    fits = [r for r in job.rounds() if r["phase"] == "fit"]
    assert len(fits) == 2 and all(len(r["nodes"]) == 3 and not r["failures"] for r in fits)
    assert setup.auc(job.load_model()) >= 0.95

    received = job.received()
    wire = [r for r in received if r["phase"] == "wire" and not r["error"]]
    train_replies = [r for r in wire if r["type"] == "train"]
    # four SecAgg+ stages (setup, share keys, masked vectors, unmask) × 3 nodes × 2 rounds
    assert len(train_replies) == 4 * 3 * 2
    assert all(r["arrays"] == 0 for r in train_replies)  # no parameter array crossed the wire in the clear
    masked = [r for r in train_replies if "masked_params" in r["configs"]]
    assert len(masked) == 3 * 2
    # evaluation is not under SecAgg: there the global model goes out, no node update comes back as arrays
    # the strategy only ever held the unmasked sum: every node's fit result is the same aggregate
    for rnd in (1, 2):
        digests = {r["sha256"] for r in received if r["phase"] == "fit" and r["round"] == rnd}
        assert len(digests) == 1


def test_secagg_node_that_refuses_drops_out_visibly(setup: Setup) -> None:
    """A node whose fit is refused (here: the bundle's approval revoked) must not upload a masked zero vector of
    weight 0, which the server cannot tell from a real update: it drops out of the round, and the two others
    (the reconstruction threshold) still finish the job."""
    c = setup.nodes["hospital-c"]
    assert approval.revoke(c.home, "tabular-risk", "1")
    try:
        job = setup.train(JobOptions(rounds=1, secagg=True, round_timeout=120))
    finally:
        approval.approve(c.home, setup.bundle)
    assert job.spec["status"] == "completed", job.spec
    [fit] = [r for r in job.rounds() if r["phase"] == "fit"]
    assert len(fit["nodes"]) == 2  # the two that trained; the aggregate's weight is theirs alone
    assert sum(n["num_examples"] for n in fit["nodes"]) > 0
    assert fit["failures"] == [{"node": "hospital-c", "reason": f"bundle tabular-risk:1 ({setup.bundle.digest[:12]}) "
                                                                 "is not approved at this node"}]
    assert "hospital-c" in job.spec["provenance"]["refused"]


def test_secagg_halts_the_job_with_a_reason_when_too_few_nodes_answer(setup: Setup) -> None:
    """Two of three refuse: below the reconstruction threshold SecAggPlusWorkflow stops quietly; the job must fail
    and say so, not complete with a model that never trained."""
    refusing = [setup.nodes["hospital-b"], setup.nodes["hospital-c"]]
    for n in refusing:
        assert approval.revoke(n.home, "tabular-risk", "1")
    try:
        job = setup.train(JobOptions(rounds=1, secagg=True, round_timeout=120))
    finally:
        for n in refusing:
            approval.approve(n.home, setup.bundle)
    assert job.spec["status"] == "failed", job.spec
    assert "secure aggregation halted: 0 of 1 rounds aggregated" in str(job.spec["error"])


def test_dp_sgd_reports_spent_epsilon_per_node_within_target(setup: Setup) -> None:
    target = 3.0
    job = setup.train(JobOptions(rounds=2, dp_epsilon=target, round_timeout=120))
    assert job.spec["status"] == "completed", job.spec
    fits = [r for r in job.rounds() if r["phase"] == "fit"]
    assert len(fits) == 2 and all(len(r["nodes"]) == 3 for r in fits)
    spent = [{x["node"]: float(x["dp_epsilon"]) for x in r["nodes"]} for r in fits]
    assert all(0 < e <= target * 1.001 for r in spent for e in r.values()), spent
    assert all(spent[1][n] > spent[0][n] for n in spent[0])  # accumulated across rounds
    assert all(e >= target * 0.5 for e in spent[-1].values())  # calibrated to the job's rounds, not wasted
    per_node = job.spec["provenance"]["nodes"]
    assert set(per_node) == {n.settings.node_id for n in setup.nodes.values()}
    assert all(0 < v["dp_epsilon_spent"] <= target * 1.001 for v in per_node.values())
    assert setup.auc(job.load_model()) >= 0.85  # noisy, still a useful model (central ≈ 0.99)

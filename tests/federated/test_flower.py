"""Integration: real flower-superlink / flower-supernode processes on 127.0.0.1, one SuperNode per node."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from incisive.federated import engine
from incisive.federated.bundle import bundle_digest, load_task, shipped_bundle
from incisive.federated.deploy import Federation, wait_for
from incisive.federated.service import JobOptions, Workspace, train
from incisive.node.fl.data import NodeData
from tests.federated.conftest import approve_all

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("flower")]


def _task():  # type: ignore[no-untyped-def]
    path = shipped_bundle("tabular-risk")
    return json.loads((path / "manifest.json").read_text()), load_task(path, bundle_digest(path))


def test_tabular_non_iid_matches_central(make_nodes, workspace: Workspace, tabular, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nodes = make_nodes(3, "non-iid", 1)
    approve_all(nodes, tabular)
    job = train(workspace, "tabular-risk:1", {k: n.home for k, n in nodes.items()},
                JobOptions(rounds=5, round_timeout=120), timeout=900)
    assert job.spec["status"] == "completed", job.spec
    fits = [r for r in job.rounds() if r["phase"] == "fit"]
    assert len(fits) == 5 and all(len(r["nodes"]) == 3 and not r["failures"] for r in fits)

    # centralized reference: the same model on the pooled training rows, as many epochs in total
    manifest, task = _task()
    trains = [task.load_data(NodeData(n), manifest, "train") for n in nodes.values()]
    tests = [task.load_data(NodeData(n), manifest, "test") for n in nodes.values()]
    x_tr, y_tr = np.concatenate([d.x for d in trains]), np.concatenate([d.y for d in trains])
    x_te, y_te = np.concatenate([d.x for d in tests]), np.concatenate([d.y for d in tests])
    central = task.build_model(manifest)
    engine.train(central, x_tr, y_tr, epochs=10, lr=0.05, batch_size=32)
    central_auc = engine.evaluate(central, x_te, y_te)["auc"]
    fed = task.build_model(manifest)
    engine.set_weights(fed, job.load_model())
    fed_auc = engine.evaluate(fed, x_te, y_te)["auc"]
    assert fed_auc >= central_auc - 0.02, (fed_auc, central_auc)
    pooled = job.rounds()[-1]["pooled"]
    assert abs(pooled["auc"] - fed_auc) < 0.02  # pooled from per-node histograms, no rows
    assert job.spec["provenance"]["nodes"].keys() == {n.settings.node_id for n in nodes.values()}
    assert workspace.registry.trained_path("tabular-risk", "1", job.id).exists()

    # what the server received: parameters (one 30-weight layer + bias) and scalar metrics, nothing else
    received = [r for r in job.received() if r["phase"] in ("fit", "evaluate")]
    assert received and all(r["tensors"] in (0, 2) for r in received)
    assert max(r["bytes"] for r in received) < 2000  # 31 float32 + npy headers; 569 rows × 30 would be > 100 kB
    allowed = {"node", "n", "loss", "accuracy", "auc", "neg", "pos", "train_seconds", "dp_epsilon", "refused"}
    assert all(set(r["metrics"]) <= allowed for r in received)
    # on the wire (no SecAgg): each node's update arrives as arrays in the clear, one reply per node and phase
    wire = [r for r in job.received() if r["phase"] == "wire"]
    assert len([r for r in wire if r["type"] == "train" and r["arrays"] == 2]) == 5 * 3
    blob = "".join(p.read_text() for p in job.path.glob("*.json*"))
    for n in nodes.values():
        for pseudonym in [k for d in (task.load_data(NodeData(n), manifest, "all"),) for k in d.keys[:20]]:
            assert pseudonym not in blob


def test_unapproved_node_refuses_and_dropped_node_does_not_stall(make_nodes, workspace: Workspace, tabular,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    nodes = make_nodes(3, "iid", 2)
    approve_all({k: v for k, v in nodes.items() if k != "hospital-c"}, tabular)
    timeout = 30.0  # a warm executor per node answers in about a second; roomy for a loaded 2-core box
    with Federation(tmp_path / "fed") as fed:
        fed.start_superlink()
        for name, n in nodes.items():
            fed.start_supernode(name, n.home)
        import threading

        box: dict[str, object] = {}
        started = time.monotonic()
        worker = threading.Thread(target=lambda: box.update(job=train(
            workspace, "tabular-risk:1", {k: n.home for k, n in nodes.items()},
            JobOptions(rounds=3, round_timeout=timeout, min_nodes=2), federation=fed, timeout=600)))
        worker.start()
        jobs_dir = workspace.jobs.root

        def first_round_done() -> bool:
            return any((p / "rounds.jsonl").exists() and '"fit"' in (p / "rounds.jsonl").read_text()
                       for p in jobs_dir.glob("*"))

        wait_for(first_round_done, 300, "the first round")
        fed.stop_supernode("hospital-b")  # node B goes away mid-training
        worker.join(600)
        elapsed = time.monotonic() - started
    job = box["job"]
    assert job.spec["status"] == "completed"  # type: ignore[attr-defined]
    rounds = job.rounds()  # type: ignore[attr-defined]
    fits = [r for r in rounds if r["phase"] == "fit"]
    assert len(fits) == 3
    assert [x["node"] for x in fits[0]["nodes"]] and "hospital-c" not in {x["node"] for r in fits for x in r["nodes"]}
    refused = job.spec["provenance"]["refused"]  # type: ignore[attr-defined]
    assert "hospital-c" in refused and "not approved" in refused["hospital-c"]
    assert {x["node"] for x in fits[-1]["nodes"]} == {"hospital-a"}
    # at most one round timeout lost per remaining phase, not a stall
    assert elapsed < 6 * timeout + 200

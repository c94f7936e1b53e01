"""The bundles' task code and the engine on a node's own data (no Flower): learning, DP accounting, FedProx."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.federated import engine
from incisive.federated.bundle import bundle_digest, load_task, shipped_bundle
from incisive.node.fl.data import NodeData
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom


def _task(name: str):  # type: ignore[no-untyped-def]
    path = shipped_bundle(name)
    return json.loads((path / "manifest.json").read_text()), load_task(path, bundle_digest(path))


def test_tabular_learns_and_dp_reports_epsilon(make_nodes) -> None:  # type: ignore[no-untyped-def]
    node = make_nodes(1, "iid")["hospital-a"]
    manifest, task = _task("tabular-risk")
    train, test = task.load_data(NodeData(node), manifest, "train"), task.load_data(NodeData(node), manifest, "test")
    assert len(train) + len(test) == 569 and len(test) > 100
    model = task.build_model(manifest)
    engine.train(model, train.x, train.y, epochs=5, lr=0.05, batch_size=32)
    assert engine.evaluate(model, test.x, test.y)["auc"] > 0.97
    dp = engine.DPConfig(epsilon=3.0, delta=1e-5)
    steps = int(np.ceil(len(train) / 32))
    noise = engine.noise_multiplier(dp, 1 / steps, 5 * steps)
    dp_model = task.build_model(manifest)
    res = engine.train(dp_model, train.x, train.y, epochs=5, lr=0.05, batch_size=32, dp=dp, dp_noise=noise)
    eps = engine.spent_epsilon([(noise, res["dp_sample_rate"], res["steps"])], dp.delta)
    assert 0 < eps <= 3.0 + 1e-6
    assert engine.evaluate(dp_model, test.x, test.y)["auc"] > 0.85


def test_fedprox_term_keeps_weights_close(make_nodes) -> None:  # type: ignore[no-untyped-def]
    node = make_nodes(1, "iid")["hospital-a"]
    manifest, task = _task("tabular-risk")
    data = task.load_data(NodeData(node), manifest, "train")
    start = engine.get_weights(task.build_model(manifest))
    drift = []
    for mu in (0.0, 10.0):
        m = task.build_model(manifest)
        engine.set_weights(m, start)
        engine.train(m, data.x, data.y, epochs=3, lr=0.05, batch_size=32, proximal_mu=mu)
        drift.append(sum(float(np.sum((a - b) ** 2)) for a, b in zip(engine.get_weights(m), start, strict=True)))
    assert drift[1] < drift[0]


@pytest.mark.slow
def test_lesion_cnn_learns_on_synthetic_cohort(sqlite_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cohort"
    generate_cohort(out, CohortSpec(patients=40, seed=5, size=32, ct_slices=4, mr_slices=4))
    import_dicom(sqlite_node, out / "dicom", workers=1)
    import_clinical(sqlite_node, out / "clinical.csv", drop=["patient_name"])
    manifest, task = _task("lesion-cnn")
    data = task.load_data(NodeData(sqlite_node), manifest, "all")
    assert len(data) > 40 and 0 < data.y.mean() < 1 and data.x.shape[1:] == (1, 32, 32)
    torch.manual_seed(0)
    model = task.build_model(manifest)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(data))
    cut = int(len(idx) * 0.7)
    tr, te = idx[:cut], idx[cut:]
    before = engine.evaluate(model, data.x[te], data.y[te])["accuracy"]
    engine.train(model, data.x[tr], data.y[tr], epochs=40, lr=0.003, batch_size=16)
    after = engine.evaluate(model, data.x[te], data.y[te])
    assert after["accuracy"] >= 0.8 and after["auc"] > 0.85, (before, after)


# CUDA training is checked by benchmarks/device_check.py on a GPU machine (the pinned torch is the CPU wheel)

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from incisive.cli import app
from incisive.federated import engine
from incisive.federated.bundle import shipped_bundle
from incisive.federated.service import Workspace
from incisive.node.fl import approval

runner = CliRunner()


def test_register_approve_plot_infer(make_nodes, workspace: Workspace, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ws = ["--workspace", str(workspace.root)]
    r = runner.invoke(app, ["model", "register", str(shipped_bundle("tabular-risk")), "--name", "tabular-risk",
                            "--version", "1", *ws])
    assert r.exit_code == 0, r.output
    node = make_nodes(1, "iid")["hospital-a"]
    r = runner.invoke(app, ["node", "policy", "approve", "tabular-risk:1", "--home", str(node.home), *ws])
    assert r.exit_code == 0, r.output
    b = workspace.registry.get("tabular-risk", "1")
    assert approval.is_approved(node.home, "tabular-risk", "1", b.digest)
    # a finished job record (as the ServerApp writes it) to plot and to infer with
    job = workspace.jobs.create({"model": "tabular-risk:1", "strategy": "fedavg"})
    for rnd in (1, 2):
        job.add_round({"phase": "fit", "round": rnd, "nodes": [{"node": "hospital-a", "loss": 0.3}], "failures": []})
        job.add_round({"phase": "evaluate", "round": rnd, "failures": [],
                       "nodes": [{"node": "hospital-a", "n": 10, "auc": 0.9, "accuracy": 0.9, "loss": 0.3}],
                       "pooled": {"n": 10, "loss": 0.3, "auc": 0.9, "accuracy": 0.9}})
    import torch

    job.save_model(engine.get_weights(torch.nn.Linear(30, 1)))
    r = runner.invoke(app, ["fl", "plot", job.id, *ws])
    assert r.exit_code == 0, r.output
    assert (job.path / "metrics.png").stat().st_size > 1000
    assert len(json.loads((job.path / "metrics.json").read_text())["rounds"]) == 2
    r = runner.invoke(app, ["fl", "status", job.id, "--json", *ws])
    assert r.exit_code == 0 and json.loads(r.output)["rounds"]
    r = runner.invoke(app, ["infer", "--model", f"tabular-risk:1@{job.id}", "--node", str(node.home), "--json", *ws])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["items"] == 569 and summary["shareable"] is False and summary["summary"] is None
    assert summary["sr_written"] == 0 and "inference_result" in summary["stored"]["catalogue"]  # tabular: rows only
    approval.revoke(node.home, "tabular-risk", "1")
    r = runner.invoke(app, ["infer", "--model", f"tabular-risk:1@{job.id}", "--node", str(node.home), *ws])
    assert r.exit_code != 0 and "not approved" in str(r.exception)

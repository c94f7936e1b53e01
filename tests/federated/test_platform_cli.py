"""The platform path of the CLI against a live platform (uvicorn, port 0): ``model register/list --platform``,
``node policy approve --from-platform``, ``fl train/status/plot --platform``. The FL runner is replaced by a
recorder (real Flower runs: test_platform_fl.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from incisive.cli import app
from incisive.federated.bundle import bundle_digest, shipped_bundle
from incisive.node.agent_link import enrol
from incisive.node.fl import approval
from incisive.node.home import Node
from incisive.platform.home import Platform
from incisive.platform.server import ThreadedServer
from incisive.platform.services import fl_jobs, users
from tests.platform.conftest import invite
from tests.platform.test_fl_registry import Recorder

runner = CliRunner()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[dict[str, Any]]:
    platform = Platform.init(tmp_path / "platform")
    platform.settings = platform.settings.model_copy(update={"port": 0})
    with platform.db.session() as s:
        tokens = {role: users.add_user(s, role, role, 1.0, "test")[1] for role in ("admin", "researcher")}
    server = ThreadedServer(platform.settings, platform.db).start()
    recorder = Recorder()
    server.server.config.app.state.fl = recorder
    node = Node.init(tmp_path / "node", provider="Hospital A")
    enrol(node, server.url, invite(platform, "Hospital A"))
    try:
        yield {"url": server.url, "tokens": tokens, "platform": platform, "node": node, "recorder": recorder}
    finally:
        server.stop()
        node.catalogue.dispose()
        platform.db.dispose()


def test_platform_cli(live: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, tokens, node = live["url"], live["tokens"], live["node"]
    monkeypatch.delenv("INCISIVE_PLATFORM_URL", raising=False)
    bundle = shipped_bundle("tabular-risk")
    admin = ["--platform", url, "--token", tokens["admin"]]
    rita = ["--platform", url, "--token", tokens["researcher"]]
    r = runner.invoke(app, ["model", "register", str(bundle), "--name", "tabular-risk", "--version", "1", *admin,
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["sha256"] == bundle_digest(bundle)
    r = runner.invoke(app, ["model", "register", str(bundle), "--name", "tabular-risk", "--version", "1", *rita])
    assert r.exit_code != 0 and "403" in str(r.exception)
    r = runner.invoke(app, ["model", "list", *rita, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)[0]["ref"] == "tabular-risk:1"

    # the node's DP manager approves the bundle as the platform holds it (signed download, re-hashed here)
    r = runner.invoke(app, ["node", "policy", "approve", "tabular-risk:1", "--from-platform", "--sha256", "0" * 64,
                            "--home", str(node.home)])
    assert r.exit_code != 0 and not approval.approvals(node.home)
    r = runner.invoke(app, ["node", "policy", "approve", "tabular-risk:1", "--from-platform",
                            "--home", str(node.home)])
    assert r.exit_code == 0, r.output
    assert approval.is_approved(node.home, "tabular-risk", "1", bundle_digest(bundle))

    r = runner.invoke(app, ["fl", "train", "--model", "tabular-risk:1", "--nodes", "all", "--rounds", "3",
                            "--strategy", "fedprox", "--no-wait", "--json", *rita])
    assert r.exit_code == 0, r.output
    job = json.loads(r.output)
    assert job["status"] == "queued" and job["spec"]["strategy"] == "fedprox" and job["spec"]["rounds"] == 3
    assert live["recorder"].submitted == [job["id"]]
    rounds = [{"phase": "evaluate", "round": 1, "failures": [], "nodes": [{"node": "hospital-a", "auc": 0.9}],
               "pooled": {"n": 10, "loss": 0.3, "auc": 0.9, "accuracy": 0.8}}]
    with live["platform"].db.session() as s:
        fl_jobs.update(s, job["id"], rounds=rounds)
        fl_jobs.finish(s, job["id"], "completed")
    r = runner.invoke(app, ["fl", "status", job["id"], "--follow", "--json", *rita])
    assert r.exit_code == 0 and json.loads(r.output)["status"] == "completed"
    r = runner.invoke(app, ["fl", "status", job["id"], *rita])
    assert r.exit_code == 0 and "completed" in r.output
    r = runner.invoke(app, ["fl", "plot", job["id"], "--out", str(tmp_path / "plots"), *rita])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "plots" / job["id"] / "metrics.png").stat().st_size > 1000
    r = runner.invoke(app, ["fl", "train", "--model", "nothing:1", *rita])
    assert r.exit_code != 0 and "404" in str(r.exception)

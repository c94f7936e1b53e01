"""``node check`` rows for the sandbox: this machine passes; ``mode = "off"`` and a missing/blocked bwrap fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from incisive.cli import app
from incisive.node.check.profiles import CheckContext, get_profile
from incisive.node.check.runner import run_check
from incisive.node.check.system import LiveSystem
from tests.node.check.conftest import check_host

runner = CliRunner()


def rows_of(store: Path) -> dict[str, tuple[str, str]]:
    r = runner.invoke(app, ["node", "check", "--only", "sandbox", "--store", str(store), "--json"])
    assert r.exit_code in (0, 2), r.output
    return {row["id"]: (row["verdict"], row["measured"]) for row in json.loads(r.stdout)["rows"]}


def test_this_machine_passes_and_mode_off_fails(tmp_path: Path, bwrap_ready: None) -> None:
    rows = rows_of(tmp_path)  # no policy.toml: the default mode, bwrap
    assert {k: v[0] for k, v in rows.items()} == {"sandbox.bwrap": "pass", "sandbox.processes": "pass",
                                                 "sandbox.mode": "pass"}
    (tmp_path / "policy.toml").write_text('[sandbox]\nmode = "off"\n')
    rows = rows_of(tmp_path)
    assert rows["sandbox.mode"][0] == "fail" and "without a sandbox" in rows["sandbox.mode"][1]


def test_bwrap_missing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on PATH (LiveSystem adds only the sbin directories)
    report = run_check(LiveSystem(), get_profile("node-spec-1.1"), CheckContext(store_path=str(tmp_path)),
                       only="sandbox")
    row = next(r for r in report.rows if r.id == "sandbox.bwrap")
    assert row.verdict.value == "fail" and "not installed" in row.measured
    assert "apt install bubblewrap" in (row.fix or "")


def test_recorded_host_without_user_namespaces() -> None:
    rows = {r.id: r for r in check_host("server-nogpu").rows}
    assert rows["sandbox.bwrap"].measured.startswith("bubblewrap cannot create namespaces: bwrap exited 1")
    assert "unprivileged_userns_clone" in (rows["sandbox.bwrap"].fix or "")
    assert rows["sandbox.processes"].measured == "root and no pids cgroup: bundle jobs are refused"

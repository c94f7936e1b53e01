"""``node status`` and the alerts: stale or missing backup, degraded array."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from incisive.cli import app
from incisive.node.backup import config, health, node_status, ops
from incisive.node.home import Node
from tests.node.backup.helpers import dir_target


@pytest.fixture(autouse=True)
def no_raid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_status, "raid_health",
                        lambda: {"md": [], "zfs": [], "alerts": [], "redundant": False})


def _status(home: Path) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["node", "status", "--json", "--home", str(home)])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_no_target_warns(sqlite_node: Node) -> None:
    warnings = _status(sqlite_node.home)["warnings"]
    assert any("no backup target" in w for w in warnings)


def test_verified_backup_then_stale(sqlite_node: Node, tmp_path: Path) -> None:
    target = dir_target(tmp_path)
    config.add_target(sqlite_node.home, target.name, target.location)
    ops.run(sqlite_node, target)
    assert any("no verified backup" in w for w in _status(sqlite_node.home)["warnings"])
    ops.verify(target, sqlite_node.settings.node_id, home=sqlite_node.home)
    data = _status(sqlite_node.home)
    assert data["warnings"] == [] and data["backup"]["verified_age_days"] < 1
    assert health.last_verified_backup_age(sqlite_node.home) < timedelta(hours=1)  # type: ignore[operator]
    later = datetime.now(UTC) + timedelta(days=20)
    stale = health.backup_health(sqlite_node.home, now=later)
    assert stale["stale"] and "days old (policy: every 14 days)" in stale["alerts"][0]


def test_degraded_array_warns(sqlite_node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_status, "raid_health", lambda: {
        "md": [{"name": "md0", "health": "degraded"}], "zfs": [], "redundant": True,
        "alerts": ["RAID array md0 is degraded (failed: sdb1)"]})
    assert "RAID array md0 is degraded (failed: sdb1)" in _status(sqlite_node.home)["warnings"]
    text = CliRunner().invoke(app, ["node", "status", "--home", str(sqlite_node.home)])
    assert "warning:" in text.stdout and "md0 degraded" in text.stdout


def test_readiness_check_sees_verified_backup(sqlite_node: Node, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from incisive.node.check.profiles import last_verified_backup_age

    monkeypatch.delenv("INCISIVE_NODE", raising=False)
    assert last_verified_backup_age() is None
    assert last_verified_backup_age(str(sqlite_node.home)) is None
    target = dir_target(tmp_path)
    config.add_target(sqlite_node.home, target.name, target.location)
    ops.run(sqlite_node, target)
    ops.verify(target, sqlite_node.settings.node_id, home=sqlite_node.home)
    monkeypatch.setenv("INCISIVE_NODE", str(sqlite_node.home))
    age = last_verified_backup_age()
    assert age is not None and age < timedelta(hours=1)

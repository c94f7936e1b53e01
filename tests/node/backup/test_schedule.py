"""``backup schedule`` writes a systemd timer + service (or a cron line) and shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from incisive.cli import app
from incisive.common.errors import InputError
from incisive.node.backup import config
from incisive.node.backup.schedule import Schedule, parse_interval
from incisive.node.home import Node


def test_parse_interval() -> None:
    assert (parse_interval("14d"), parse_interval("2w"), parse_interval("3")) == (14, 14, 3)
    for bad in ("0d", "d", "14h", ""):
        with pytest.raises(InputError):
            parse_interval(bad)


def test_units(tmp_path: Path) -> None:
    sched = Schedule(tmp_path / "node", 14, "usb", user="incisive")
    service, timer = sched.service(), sched.timer()
    assert "Type=oneshot" in service and "User=incisive" in service
    assert "backup run usb --verify --if-older 14d --home" in service
    assert "OnCalendar=*-*-* 02:30:00" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer
    assert sched.cron().startswith("30 2 * * * ") and "--if-older 14d" in sched.cron()


def test_cli_writes_and_shows(sqlite_node: Node, tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    drive.mkdir()
    config.add_target(sqlite_node.home, "usb", str(drive))
    out = tmp_path / "units"
    result = CliRunner().invoke(app, ["backup", "schedule", "--every", "2w", "--write-to", str(out),
                                      "--home", str(sqlite_node.home)])
    assert result.exit_code == 0, result.output
    assert (out / "incisive-backup.service").is_file() and (out / "incisive-backup.timer").is_file()
    assert "[Timer]" in result.stdout and "ExecStart=" in result.stdout and "systemctl enable" in result.stdout
    assert config.load(sqlite_node.home).policy.every_days == 14

    cron = CliRunner().invoke(app, ["backup", "schedule", "--every", "7d", "--cron", "--write-to", str(out),
                                    "--home", str(sqlite_node.home)])
    assert cron.exit_code == 0 and "--if-older 7d" in (out / "incisive-backup.cron").read_text()


def test_if_older_skips_when_not_due(sqlite_node: Node, tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    drive.mkdir()
    config.add_target(sqlite_node.home, "usb", str(drive))
    runner = CliRunner()
    home = ["--home", str(sqlite_node.home)]
    assert runner.invoke(app, ["backup", "run", "--if-older", "14d", "--json", *home]).exit_code == 0
    second = runner.invoke(app, ["backup", "run", "--if-older", "14d", "--json", *home])
    assert second.exit_code == 0 and '"not due"' in second.stdout

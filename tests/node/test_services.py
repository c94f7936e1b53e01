"""systemd units of the node and the platform (install-services): ``systemd-analyze verify`` on every unit, the
``systemd-analyze security`` exposure score per service (target <= 3.0), capabilities only for ports < 1024, an
offline install under a root directory (sysusers user, unit files, enable symlinks) and the readiness row that
reads it back. No running systemd is needed; nothing is written outside tmp_path."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from incisive.common.errors import ConfigError
from incisive.node import services
from incisive.node.check import CheckContext, RecordedSystem, get_profile, run_check
from incisive.node.home import Node
from incisive.platform import services_units
from incisive.platform.home import Platform

TARGET_EXPOSURE = 3.0
SCORE = re.compile(r"Overall exposure level for \S+: ([\d.]+) (\w+)")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI (Debian package systemd, installed by .ci/run)")
        pytest.skip(f"{tool} not installed")
    return path


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("systemd-analyze"), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "cat"})


def exposure(unit: Path) -> tuple[float, str]:
    done = _analyze("security", "--offline=yes", "--no-pager", str(unit))
    match = SCORE.search(done.stdout)
    assert match, done.stdout[-1500:] + done.stderr[-1500:]
    return float(match.group(1)), match.group(2)


@pytest.fixture
def all_units(sqlite_node: Node, tmp_path: Path) -> Path:
    """Every unit either side writes, in one folder."""
    folder = tmp_path / "units"
    services.install(sqlite_node, write_to=folder)
    platform = Platform.init(tmp_path / "platform")
    services_units.install(platform, write_to=folder)
    return folder


def test_every_generated_unit_verifies(all_units: Path) -> None:
    names = sorted(p.name for p in all_units.iterdir() if p.suffix in (".service", ".timer"))
    assert names == sorted([services.SERVE, services.AGENT, services.BACKUP_SERVICE, services.BACKUP_TIMER,
                            services_units.SERVE])
    for name in names:
        done = _analyze("verify", "--man=no", str(all_units / name))
        assert done.returncode == 0 and not done.stderr.strip(), f"{name}: {done.stderr}"
    # the check can fail: a misspelt directive is reported
    broken = all_units / "broken.service"
    broken.write_text((all_units / services.SERVE).read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    done = _analyze("verify", "--man=no", str(broken))
    assert "Unknown key 'ProtectHomes'" in done.stderr


def test_exposure_score_per_service(all_units: Path, record_property: pytest.RecordProperty) -> None:
    scores = {}
    for unit in sorted(all_units.glob("*.service")):
        scores[unit.name] = exposure(unit)
        record_property(unit.name, scores[unit.name][0])
    print("systemd-analyze security exposure:", json.dumps(scores))
    for name, (score, verdict) in scores.items():
        assert score <= TARGET_EXPOSURE and verdict == "OK", f"{name}: {score} {verdict} (target <= 3.0 OK)"
    bare = all_units / "bare.service"  # the scorer is not vacuous: an unhardened unit is UNSAFE
    bare.write_text(f"[Service]\nExecStart={sys.executable} -c pass\n")
    score, verdict = exposure(bare)
    assert score > 9.0 and verdict == "UNSAFE"


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_hardening_and_capabilities_follow_the_ports(sqlite_node: Node, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    serve = _directives(services.units(sqlite_node)[services.SERVE])
    assert serve["CapabilityBoundingSet"] == [""] and serve["AmbientCapabilities"] == [""]
    assert serve["User"] == ["incisive"] and serve["ReadWritePaths"] == [str(sqlite_node.home)]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                       ("ProtectHome", "yes"), ("Restart", "on-failure"), ("StandardOutput", "journal"),
                       ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"), ("PrivateUsers", "yes")):
        assert serve[key] == [value], key
    assert "@system-service" in serve["SystemCallFilter"]
    assert serve["ExecStart"] == [f"{Path(sys.executable).parent / 'incisive'} node serve --home {sqlite_node.home}"]

    monkeypatch.setenv("INCISIVE_DICOM_PORT", "104")  # the DICOM well-known port
    low = _directives(services.units(Node.open(sqlite_node.home))[services.SERVE])
    assert low["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert low["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"] and "PrivateUsers" not in low

    agent = _directives(services.units(sqlite_node)[services.AGENT])
    assert agent["RestartPreventExitStatus"] == ["2 5"]  # bad config / revoked: a person must act
    assert agent["CapabilityBoundingSet"] == [""]

    with pytest.raises(ConfigError, match="unprivileged"):
        services.units(sqlite_node, user="root")


def test_install_refuses_the_live_system_without_root(sqlite_node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match="run it as root"):
        services.install(sqlite_node)  # refused before anything is written


def _record(root: Path, files: Path) -> RecordedSystem:
    """A recorded machine made from an installed root: its files and ``systemctl is-enabled`` answers."""
    cmd = root / "cmd"
    cmd.mkdir(exist_ok=True)
    commands = {}
    for unit in services.ENABLED:
        done = subprocess.run([need("systemctl"), f"--root={files}", "is-enabled", unit], capture_output=True,
                              text=True, timeout=60)
        commands[f"systemctl-is-enabled__{unit}"] = {"rc": done.returncode, "stdout": done.stdout}
    (root / "host.json").write_text(json.dumps({"platform": "Linux", "hostname": "installed", "commands": commands}))
    return RecordedSystem(root)


def _services_row(system: RecordedSystem) -> tuple[str, str]:
    report = run_check(system, get_profile("node-spec-1.1"), CheckContext(), only="runtime")
    row = next(r for r in report.rows if r.id == "runtime.services")
    return row.verdict.value, row.measured


def test_install_under_a_root_then_readiness_reads_it(sqlite_node: Node, tmp_path: Path) -> None:
    need("systemd-sysusers")
    recording = tmp_path / "machine"
    files = recording / "files"
    (files / "etc").mkdir(parents=True)
    assert _services_row(_record(recording, files))[0] == "warn"  # nothing installed yet

    done = services.install(sqlite_node, user="incisive-test", root=files)
    assert sorted(p.name for p in done.files) == sorted([services.SERVE, services.AGENT, services.BACKUP_SERVICE,
                                                          services.BACKUP_TIMER])
    passwd = (files / "etc" / "passwd").read_text()
    assert re.search(r"^incisive-test:x:\d+:\d+:[^:]*:/:/usr/sbin/nologin$", passwd, re.M), passwd
    assert (files / "etc/systemd/system/multi-user.target.wants" / services.SERVE).is_symlink()
    assert (files / "etc/systemd/system/timers.target.wants" / services.BACKUP_TIMER).is_symlink()
    verdict, measured = _services_row(_record(recording, files))
    assert verdict == "pass", measured

    subprocess.run([need("systemctl"), f"--root={files}", "disable", services.AGENT], check=True,
                   capture_output=True, timeout=60)
    verdict, measured = _services_row(_record(recording, files))
    assert verdict == "warn" and f"{services.AGENT} disabled" in measured


def test_cli_writes_units_for_review(sqlite_node: Node, tmp_path: Path) -> None:
    platform = Platform.init(tmp_path / "platform")
    out = tmp_path / "review"
    node_cli = subprocess.run([sys.executable, "-m", "incisive", "node", "install-services", "--home",
                               str(sqlite_node.home), "--write-to", str(out), "--json"],
                              capture_output=True, text=True, timeout=120)
    assert node_cli.returncode == 0, node_cli.stderr
    assert json.loads(node_cli.stdout)["enabled"] == []
    plat_cli = subprocess.run([sys.executable, "-m", "incisive", "platform", "install-services", "--home",
                               str(platform.home), "--write-to", str(out)], capture_output=True, text=True,
                              timeout=120)
    assert plat_cli.returncode == 0, plat_cli.stderr
    assert {p.name for p in out.iterdir()} == {services.SERVE, services.AGENT, services.BACKUP_SERVICE,
                                               services.BACKUP_TIMER, services_units.SERVE,
                                               "incisive-incisive.sysusers.conf"}
    assert f"platform serve --home {platform.home}" in (out / services_units.SERVE).read_text()

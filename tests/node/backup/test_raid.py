"""RAID/ZFS parsers on recorded output (clean, degraded, rebuilding, failed member) and the --plan helper."""

from __future__ import annotations

from pathlib import Path

import pytest

from incisive.common.errors import InputError
from incisive.node.backup.raid import (
    Device,
    parse_mdadm_detail,
    parse_mdstat,
    parse_zpool_status,
    plan_mirror,
    raid_health,
)

FIX = Path(__file__).parent / "fixtures"


def _read(name: str) -> str:
    return (FIX / name).read_text()


@pytest.mark.parametrize(("fixture", "health", "failed"), [
    ("mdstat_clean.txt", "clean", []),
    ("mdstat_degraded.txt", "degraded", []),
    ("mdstat_rebuilding.txt", "rebuilding", []),
    ("mdstat_failed_member.txt", "degraded", ["sdc"]),
])
def test_mdstat(fixture: str, health: str, failed: list[str]) -> None:
    first = parse_mdstat(_read(fixture))[0]
    assert first["health"] == health and first["failed_members"] == failed


def test_mdstat_details() -> None:
    arrays = parse_mdstat(_read("mdstat_failed_member.txt"))
    assert [(a["name"], a["level"], a["devices"], a["working"]) for a in arrays] == [
        ("md1", "raid5", 4, 3), ("md0", "raid1", 2, 2)]
    assert arrays[1]["health"] == "clean"
    rebuilding = parse_mdstat(_read("mdstat_rebuilding.txt"))[0]
    assert rebuilding["progress"] == 8.5 and rebuilding["finish"] == "74.8min"
    inactive = "Personalities :\nmd127 : inactive sdb[0](S)\n      976630464 blocks\n"
    assert parse_mdstat(inactive)[0]["health"] == "failed"


@pytest.mark.parametrize(("fixture", "health", "failed"), [
    ("mdadm_detail_clean.txt", "clean", []),
    ("mdadm_detail_rebuilding.txt", "rebuilding", []),
    ("mdadm_detail_failed.txt", "degraded", ["/dev/sdc"]),
])
def test_mdadm_detail(fixture: str, health: str, failed: list[str]) -> None:
    detail = parse_mdadm_detail(_read(fixture))
    assert detail["health"] == health and detail["failed_members"] == failed


def test_mdadm_detail_fields() -> None:
    d = parse_mdadm_detail(_read("mdadm_detail_rebuilding.txt"))
    assert (d["level"], d["raid_devices"], d["active"], d["spare"], d["rebuild_percent"]) == ("raid1", 2, 1, 1, 8)
    assert d["devices"][1] == {"device": "/dev/sdc1", "state": "spare rebuilding"}


@pytest.mark.parametrize(("fixture", "health"), [
    ("zpool_healthy.txt", None), ("zpool_degraded.txt", "degraded"), ("zpool_resilver.txt", "rebuilding"),
    ("zpool_faulted.txt", "failed"),
])
def test_zpool(fixture: str, health: str | None) -> None:
    pools = parse_zpool_status(_read(fixture))
    assert (pools[0]["health"] if pools else None) == health


def test_zpool_bad_devices() -> None:
    pool = parse_zpool_status(_read("zpool_degraded.txt"))[0]
    assert pool["pool"] == "tank" and {"device": "sdb", "state": "UNAVAIL"} in pool["bad_devices"]


def test_raid_health_alerts(tmp_path: Path) -> None:
    mdstat = tmp_path / "mdstat"
    mdstat.write_text(_read("mdstat_failed_member.txt"))

    def run(argv: list[str]) -> str | None:
        if argv[:2] == ["mdadm", "--detail"]:
            return _read("mdadm_detail_failed.txt" if argv[2] == "/dev/md1" else "mdadm_detail_clean.txt")
        return _read("zpool_resilver.txt")

    data = raid_health(mdstat, run)
    assert data["alerts"] == ["RAID array md1 is degraded (failed: sdc)",
                              "ZFS pool tank is rebuilding (DEGRADED)"]
    healthy = raid_health(tmp_path / "absent", lambda argv: None)
    assert healthy == {"md": [], "zfs": [], "alerts": [], "redundant": False}


def _probe(devices: dict[str, Device]) -> object:
    return lambda path: devices[path]


def test_plan_for_empty_pair() -> None:
    size = 4_000_000_000_000
    devs = {"/dev/sdb": Device("/dev/sdb", size=size), "/dev/sdc": Device("/dev/sdc", size=size)}
    commands = plan_mirror(["/dev/sdb", "/dev/sdc"], lambda p: devs[p])
    assert "sudo mdadm --create /dev/md0 --level=1 --raid-devices=2 --bitmap=internal /dev/sdb /dev/sdc" in commands
    assert any(c.startswith("sudo mkfs.ext4") for c in commands) and any("mdadm.conf" in c for c in commands)


@pytest.mark.parametrize(("device", "message"), [
    (Device("/dev/sdc", mounted=["/data"]), "mounted at /data"),
    (Device("/dev/sdc", children=["sdc1"]), "partition sdc1"),
    (Device("/dev/sdc", signatures=["ext4"]), "ext4 signature"),
    (Device("/dev/sdc", block=False, children=["patients"]), "populated volume"),
    (Device("/dev/sdc", exists=False, block=False), "does not exist"),
])
def test_plan_refuses_populated(device: Device, message: str) -> None:
    devs = {"/dev/sdb": Device("/dev/sdb"), "/dev/sdc": device}
    with pytest.raises(InputError, match=message):
        plan_mirror(["/dev/sdb", "/dev/sdc"], lambda p: devs[p])


def test_plan_needs_two_similar_disks() -> None:
    with pytest.raises(InputError, match="exactly two"):
        plan_mirror(["/dev/sdb"], lambda p: Device(p))
    devs = {"/dev/sdb": Device("/dev/sdb", size=1000), "/dev/sdc": Device("/dev/sdc", size=2000)}
    with pytest.raises(InputError, match="differ in size"):
        plan_mirror(["/dev/sdb", "/dev/sdc"], lambda p: devs[p])


def test_plan_refuses_real_populated_directory(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file").write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="populated volume"):
        plan_mirror([str(tmp_path / "data"), str(empty)])

"""Every row of the node-spec-1.1 profile, judged on five recorded machines."""

from __future__ import annotations

from datetime import timedelta

import pytest

from incisive.node.check import Verdict

from .conftest import HOSTS, check_host, verdicts

# host -> row id -> expected verdict (the full table: a row added or dropped shows up here)
EXPECTED: dict[str, dict[str, str]] = {
    "workstation": {
        "cpu.cores": "pass", "cpu.threads": "pass",
        "memory.size": "warn", "memory.ecc": "pass", "memory.type": "pass", "memory.slots": "pass",
        "storage.os-disk": "pass", "storage.os-disk-type": "pass", "storage.data-disk": "pass",
        "storage.store-free": "pass",
        "gpu.model": "pass", "gpu.memory": "pass", "gpu.architecture": "pass", "gpu.driver": "pass",
        "gpu.secure-boot": "pass",
        "os.family": "pass", "os.distribution": "pass", "os.virtualisation": "pass",
        "network.link": "pass", "network.public-ip": "pass", "network.dns": "pass", "network.platform": "manual",
        "network.firewall": "pass",
        "access.ssh": "pass", "access.sshd-hardening": "pass", "access.integration-user": "pass",
        "access.password-policy": "pass",
        "access.file-modes": "pass",
        "runtime.docker": "pass", "runtime.services": "pass",
        "sandbox.bwrap": "pass", "sandbox.processes": "pass", "sandbox.mode": "pass",
        "redundancy.raid": "pass", "redundancy.backup-age": "unknown",
        "manual.wired": "manual", "manual.room": "manual", "manual.power": "manual",
    },
    "vm": {
        "cpu.cores": "pass", "cpu.threads": "pass",
        "memory.size": "pass", "memory.ecc": "pass", "memory.type": "pass", "memory.slots": "pass",
        "storage.os-disk": "pass", "storage.os-disk-type": "pass", "storage.data-disk": "pass",
        "storage.store-free": "pass",
        "gpu.model": "pass", "gpu.memory": "pass", "gpu.architecture": "pass", "gpu.driver": "pass",
        "gpu.secure-boot": "pass",
        "os.family": "pass", "os.distribution": "pass", "os.virtualisation": "pass",
        "network.link": "unknown", "network.public-ip": "pass", "network.dns": "pass",
        "network.platform": "manual", "network.firewall": "pass",
        "access.ssh": "pass", "access.sshd-hardening": "pass", "access.integration-user": "pass",
        "access.password-policy": "pass",
        "access.file-modes": "unknown",
        "runtime.docker": "warn", "runtime.services": "warn",
        "sandbox.bwrap": "pass", "sandbox.processes": "pass", "sandbox.mode": "pass",
        "redundancy.raid": "warn", "redundancy.backup-age": "unknown",
        "manual.wired": "manual", "manual.room": "manual", "manual.power": "manual",
    },
    "laptop": {
        "cpu.cores": "fail", "cpu.threads": "warn",
        "memory.size": "fail", "memory.ecc": "unknown", "memory.type": "unknown", "memory.slots": "unknown",
        "storage.os-disk": "fail", "storage.os-disk-type": "warn", "storage.data-disk": "fail",
        "storage.store-free": "fail",
        "gpu.model": "pass", "gpu.memory": "warn", "gpu.architecture": "fail", "gpu.driver": "pass",
        "gpu.secure-boot": "fail",
        "os.family": "pass", "os.distribution": "fail", "os.virtualisation": "pass",
        "network.link": "fail", "network.public-ip": "warn", "network.dns": "fail", "network.platform": "manual",
        "network.firewall": "fail",
        "access.ssh": "fail", "access.sshd-hardening": "unknown", "access.integration-user": "fail",
        "access.password-policy": "warn",
        "access.file-modes": "fail",
        "runtime.docker": "warn", "runtime.services": "warn",
        "sandbox.bwrap": "fail", "sandbox.processes": "unknown", "sandbox.mode": "pass",
        "redundancy.raid": "warn", "redundancy.backup-age": "unknown",
        "manual.wired": "manual", "manual.room": "manual", "manual.power": "manual",
    },
    "windows": {
        "cpu.cores": "unknown", "cpu.threads": "unknown",
        "memory.size": "unknown", "memory.ecc": "unknown", "memory.type": "unknown", "memory.slots": "unknown",
        "storage.os-disk": "unknown", "storage.os-disk-type": "unknown", "storage.data-disk": "unknown",
        "storage.store-free": "unknown",
        "gpu.model": "unknown",
        "os.family": "fail", "os.distribution": "fail", "os.virtualisation": "unknown",
        "network.link": "unknown", "network.public-ip": "unknown", "network.dns": "fail",
        "network.platform": "manual", "network.firewall": "unknown",
        "access.ssh": "fail", "access.sshd-hardening": "unknown", "access.integration-user": "unknown",
        "access.password-policy": "warn",
        "access.file-modes": "unknown",
        "runtime.docker": "warn", "runtime.services": "unknown",
        "sandbox.bwrap": "fail",
        "redundancy.raid": "warn", "redundancy.backup-age": "unknown",
        "manual.wired": "manual", "manual.room": "manual", "manual.power": "manual",
    },
    "server-nogpu": {
        "cpu.cores": "fail", "cpu.threads": "fail",
        "memory.size": "pass", "memory.ecc": "pass", "memory.type": "warn", "memory.slots": "pass",
        "storage.os-disk": "pass", "storage.os-disk-type": "pass", "storage.data-disk": "warn",
        "storage.store-free": "pass",
        "gpu.model": "warn",
        "os.family": "pass", "os.distribution": "pass", "os.virtualisation": "pass",
        "network.link": "pass", "network.public-ip": "pass", "network.dns": "pass", "network.platform": "manual",
        "network.firewall": "fail",
        "access.ssh": "pass", "access.sshd-hardening": "warn", "access.integration-user": "pass",
        "access.password-policy": "warn",
        "access.file-modes": "unknown",
        "runtime.docker": "pass", "runtime.services": "pass",
        "sandbox.bwrap": "fail", "sandbox.processes": "fail", "sandbox.mode": "pass",
        "redundancy.raid": "fail", "redundancy.backup-age": "unknown",
        "manual.wired": "manual", "manual.room": "manual", "manual.power": "manual",
    },
}
EXIT_CODES = {"workstation": 1, "vm": 1, "laptop": 2, "windows": 2, "server-nogpu": 2}


@pytest.mark.parametrize("host", HOSTS)
def test_every_row_has_the_expected_verdict(host: str) -> None:
    report = check_host(host)
    assert verdicts(report) == EXPECTED[host]
    assert [r.id for r in report.rows] == list(EXPECTED[host])  # report order is stable
    assert report.exit_code == EXIT_CODES[host]


def test_fixtures_cover_every_verdict_and_every_row() -> None:
    seen = {v for table in EXPECTED.values() for v in table.values()}
    assert seen == {v.value for v in Verdict}
    all_rows = set().union(*(set(t) for t in EXPECTED.values()))
    assert all_rows == set(EXPECTED["workstation"])  # the workstation shows every row


@pytest.mark.parametrize("host", HOSTS)
def test_non_pass_rows_say_how_to_fix(host: str) -> None:
    for row in check_host(host).rows:
        assert (row.fix is None) == (row.verdict is Verdict.PASS), row
        assert row.measured and row.requirement
        assert "Traceback" not in row.measured


def test_compliant_workstation_measurements() -> None:
    rows = {r.id: r for r in check_host("workstation").rows}
    assert "i9-12900K: 16 cores, 3.20 GHz" in rows["cpu.cores"].measured
    assert rows["memory.slots"].measured == "2 of 4 slots used (2×32 GB)"
    assert rows["storage.os-disk-type"].measured == "nvme0n1: NVMe Gen4"
    assert "md0 (raid1, SSD" in rows["storage.data-disk"].measured
    assert rows["gpu.architecture"].measured == "Ampere (compute capability 8.6)"
    assert rows["gpu.driver"].measured == "driver 550.54.14 (via NVML)"
    assert rows["redundancy.raid"].measured == "md0 raid1 [2/2] clean"
    assert rows["redundancy.backup-age"].measured == "unknown: backup feature not configured"


def test_vm_says_the_same_requirements_apply() -> None:
    rows = {r.id: r for r in check_host("vm").rows}
    assert "virtual machine (kvm)" in rows["os.virtualisation"].measured
    assert "same requirements apply" in rows["os.virtualisation"].measured
    assert rows["gpu.driver"].measured.endswith("(via nvidia-smi)")  # NVML missing: nvidia-smi fallback
    assert rows["access.sshd-hardening"].measured.startswith("maxauthtries=3")  # from sshd_config, Match ignored
    assert rows["network.public-ip"].measured == "VPN wg0"


def test_laptop_reasons() -> None:
    rows = {r.id: r for r in check_host("laptop").rows}
    assert "needs root" in rows["memory.ecc"].measured
    assert rows["network.link"].measured == "wireless only (wlp0s20f3)"
    assert rows["os.distribution"].measured.endswith("support ended 2025-05-31")
    assert "unsigned" in rows["gpu.secure-boot"].measured


def test_server_without_gpu_needs_24_threads() -> None:
    rows = {r.id: r for r in check_host("server-nogpu").rows}
    assert rows["cpu.threads"].measured == "20 threads; GPU absent"
    assert "without a GPU" in (rows["cpu.threads"].fix or "")
    assert rows["redundancy.raid"].measured == "md1 raid1 [2/1] clean, degraded"
    assert "53/UDP out" in rows["network.firewall"].measured


def test_backup_hook_replaces_unknown() -> None:
    fresh = check_host("workstation", backup_age=lambda: timedelta(days=2))
    stale = check_host("workstation", backup_age=lambda: timedelta(days=30))
    assert verdicts(fresh)["redundancy.backup-age"] == "pass"
    assert verdicts(stale)["redundancy.backup-age"] == "fail"


def test_failing_backup_hook_is_unknown_not_a_crash() -> None:
    def broken() -> timedelta:
        raise RuntimeError("repository locked")

    row = next(r for r in check_host("workstation", backup_age=broken).rows if r.id == "redundancy.backup-age")
    assert row.verdict is Verdict.UNKNOWN
    assert "repository locked" in row.measured


def test_exit_code_zero_when_everything_passes() -> None:
    report = check_host("workstation", only="cpu,gpu,storage,os,access,runtime,manual")
    assert report.exit_code == 0
    assert {r.verdict for r in report.rows} <= {Verdict.PASS, Verdict.MANUAL}


def test_platform_url_reachability() -> None:
    ok = check_host("workstation", platform_url="https://platform.invalid/api",
                    only="network")
    row = next(r for r in ok.rows if r.id == "network.platform")
    assert row.verdict is Verdict.FAIL  # the recording has no answer for it: connection refused
    assert "connection refused" in row.measured


def test_profiles_differ() -> None:
    central = verdicts(check_host("workstation", profile="central"))
    assert central["memory.size"] == "fail"  # 64 GB < 128 GB
    assert central["storage.data-disk"] == "fail"  # 2 TB < 4 TB
    demo = check_host("laptop", profile="demo")
    demo_v = verdicts(demo)
    assert demo_v["memory.size"] == "pass"
    assert demo_v["storage.data-disk"] == "pass"
    assert "access.ssh" not in demo_v and "redundancy.backup-age" not in demo_v

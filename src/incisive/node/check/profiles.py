"""Thresholds per profile: the published node specification 1.1, a central node, and a demo laptop."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from incisive.common.errors import InputError
from incisive.node.check.model import Verdict


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    # CPU
    intel_min_cores: int = 16
    intel_min_ghz: float = 1.8
    amd_min_cores: int = 12
    amd_min_ghz: float = 3.0
    ideal_threads: int = 24
    cpu_only_min_threads: int = 24
    # RAM
    ram_min_gb: float = 64
    ram_later_gb: float = 128
    no_ecc: Verdict = Verdict.WARN
    # storage (decimal TB; a "1 TB" drive of 960 GB counts)
    os_disk_min_tb: float = 1.0
    data_disk_min_tb: float = 1.0
    separate_data_disk: bool = True
    store_min_free_gb: float = 100
    # GPU
    gpu_min_vram_gb: float = 12
    gpu_min_compute_cap: float = 7.0  # Volta
    # network
    no_public_ip_or_vpn: Verdict = Verdict.WARN
    # redundancy
    no_raid: Verdict = Verdict.WARN
    backup_max_age_days: int = 14
    skip: frozenset[str] = field(default_factory=frozenset)
    """Row ids this profile does not judge."""


PROFILES: dict[str, Profile] = {
    "node-spec-1.1": Profile(
        name="node-spec-1.1",
        description="Hospital node, INCISIVE node specification 1.1",
    ),
    "central": Profile(
        name="central",
        description="Central node hosting several data providers (tenants): stricter memory, storage, RAID",
        ideal_threads=32,
        ram_min_gb=128,
        ram_later_gb=256,
        no_ecc=Verdict.FAIL,
        data_disk_min_tb=4.0,
        store_min_free_gb=500,
        gpu_min_vram_gb=24,
        no_public_ip_or_vpn=Verdict.FAIL,
        no_raid=Verdict.FAIL,
        backup_max_age_days=7,
    ),
    "demo": Profile(
        name="demo",
        description="Demonstration on a laptop or small VM (synthetic data only)",
        intel_min_cores=2, intel_min_ghz=1.0, amd_min_cores=2, amd_min_ghz=1.0,
        ideal_threads=4, cpu_only_min_threads=2,
        ram_min_gb=8, ram_later_gb=16, no_ecc=Verdict.PASS,
        os_disk_min_tb=0.05, data_disk_min_tb=0.0, separate_data_disk=False, store_min_free_gb=10,
        gpu_min_vram_gb=4, gpu_min_compute_cap=5.0,
        no_public_ip_or_vpn=Verdict.PASS, no_raid=Verdict.PASS,
        skip=frozenset({
            "memory.slots", "memory.type", "storage.os-disk-type", "network.firewall", "access.ssh",
            "access.sshd-hardening", "access.integration-user", "access.password-policy",
            "redundancy.backup-age", "runtime.services",
        }),
    ),
}
DEFAULT_PROFILE = "node-spec-1.1"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise InputError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None


def last_verified_backup_age(home: str | None = None) -> timedelta | None:
    """Age of the newest *verified* backup of the node at ``home`` (default ``$INCISIVE_NODE``), or None when
    there is no node or no verified backup yet (the readiness row then says ``unknown``)."""
    from incisive.node.backup.health import last_verified_backup_age as node_backup_age

    home = home or os.environ.get("INCISIVE_NODE")
    return node_backup_age(Path(home)) if home else None


@dataclass(frozen=True)
class CheckContext:
    """What the check needs to know besides the machine: node settings and hooks."""

    store_path: str = "/var/lib/incisive"
    integration_user: str = "incisive"
    platform_url: str | None = None
    dns_name: str = "example.org"
    today: date = field(default_factory=date.today)
    backup_age: Callable[[], timedelta | None] = last_verified_backup_age

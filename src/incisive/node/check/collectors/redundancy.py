"""Redundancy: software RAID (/proc/mdstat, ``mdadm --detail``), ZFS pools (``zpool status -x``), backups."""

from __future__ import annotations

import re

from incisive.node.backup import raid
from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System


def parse_mdstat(text: str) -> list[Facts]:
    """The readiness view of /proc/mdstat, from the backup feature's parser (one parser for both)."""
    arrays: list[Facts] = []
    for a in raid.parse_mdstat(text):
        short = a["working"] is not None and a["devices"] is not None and a["working"] < a["devices"]
        arrays.append({
            "name": a["name"], "state": a["state"], "level": a["level"], "devices": a["devices"],
            "working": a["working"], "degraded": short or "_" in (a["map"] or "") or bool(a["failed_members"]),
            "rebuilding": a["sync"] in ("recovery", "resync", "reshape"),
        })
    return arrays


def collect(system: System, ctx: CheckContext) -> Facts:
    facts: Facts = {"errors": {}}
    mdstat = system.read("/proc/mdstat")
    facts["md"] = parse_mdstat(mdstat) if mdstat is not None else None
    if mdstat is None:
        facts["errors"]["md"] = "/proc/mdstat not present (md driver not loaded)"
    for array in facts["md"] or []:
        detail = system.run("mdadm-detail", f"/dev/{array['name']}")
        match = re.search(r"^\s*State\s*:\s*(.+)$", detail.stdout, re.MULTILINE) if detail.ok else None
        array["mdadm_state"] = match.group(1).strip() if match else None
        if array["mdadm_state"] and re.search(r"degraded|failed|inactive", array["mdadm_state"]):
            array["degraded"] = True
    zpool = system.run("zpool-status")
    if zpool.ok:
        text = zpool.stdout.strip()
        facts["zfs"] = {"healthy": text in ("all pools are healthy", "no pools available"),
                        "pools": "no pools available" not in text, "summary": text.splitlines()[0] if text else ""}
    else:
        facts["zfs"] = None
        facts["errors"]["zfs"] = zpool.reason
    try:
        age = ctx.backup_age()
    except Exception as exc:  # a backup hook must not break the readiness check
        age, facts["errors"]["backup"] = None, f"backup status unavailable: {exc}"
    facts["backup_age_days"] = None if age is None else age.total_seconds() / 86400
    return facts

"""Redundancy: software RAID (/proc/mdstat, ``mdadm --detail``), ZFS pools (``zpool status -x``), backups."""

from __future__ import annotations

import re

from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System

_ARRAY = re.compile(r"^(md\w+)\s*:\s*(\w+)\s+(?:\(\w+\)\s+)?(raid\d+|linear|multipath)?")
_STATUS = re.compile(r"\[(\d+)/(\d+)\]\s+\[([U_]+)\]")


def parse_mdstat(text: str) -> list[Facts]:
    arrays: list[Facts] = []
    current: Facts | None = None
    for line in text.splitlines():
        match = _ARRAY.match(line)
        if match:
            current = {"name": match.group(1), "state": match.group(2), "level": match.group(3),
                       "devices": None, "working": None, "degraded": False, "rebuilding": False}
            arrays.append(current)
            continue
        if current is None:
            continue
        status = _STATUS.search(line)
        if status:
            total, working = int(status.group(1)), int(status.group(2))
            current.update(devices=total, working=working, degraded=working < total or "_" in status.group(3))
        if re.search(r"\b(recovery|resync|reshape|rebuild)\b", line):
            current["rebuilding"] = True
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

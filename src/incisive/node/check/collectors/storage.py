"""Storage: block devices from ``lsblk -J``, mounts, store volume usage and NVMe link speed."""

from __future__ import annotations

import json
from typing import Any

from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System

GT_S_TO_GEN = {"2.5": 1, "5.0": 2, "8.0": 3, "16.0": 4, "32.0": 5, "64.0": 6}


def flatten(devices: list[dict[str, Any]], top: str | None = None) -> list[Facts]:
    """Every lsblk node with its top-level disk(s); RAID members repeat under each disk, which is kept."""
    out: list[Facts] = []
    for dev in devices:
        root = top or str(dev.get("name"))
        mounts = dev.get("mountpoints")
        if mounts is None:
            mounts = [dev.get("mountpoint")]
        out.append({
            "name": dev.get("name"), "type": dev.get("type"), "size": int(dev.get("size") or 0),
            "rota": _bool(dev.get("rota")), "tran": dev.get("tran"), "model": dev.get("model"),
            "mountpoints": [m for m in mounts if m], "disk": root,
        })
        out.extend(flatten(dev.get("children") or [], root))
    return out


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    return str(value).strip() in ("1", "true")


def mount_of(path: str, mounts: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(device, mount point) of the longest mount point that contains ``path``."""
    best: tuple[str, str] | None = None
    for device, point in mounts:
        inside = path == point or path.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and (best is None or len(point) > len(best[1])):
            best = (device, point)
    return best


def collect(system: System, ctx: CheckContext) -> Facts:
    facts: Facts = {"errors": {}, "store_path": ctx.store_path}
    result = system.run("lsblk")
    nodes: list[Facts] = []
    if result.ok:
        try:
            nodes = flatten(json.loads(result.stdout).get("blockdevices", []))
        except (ValueError, AttributeError) as exc:
            facts["errors"]["lsblk"] = f"unreadable lsblk output: {exc}"
    else:
        facts["errors"]["lsblk"] = result.reason
    facts["devices"] = nodes
    facts["disks"] = {n["name"]: n for n in nodes if n["type"] == "disk"}
    mounts: list[tuple[str, str]] = []
    for line in (system.read("/proc/self/mounts") or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("/dev/"):
            mounts.append((parts[0], parts[1].replace("\\040", " ")))
    facts["store_mount"] = mount_of(ctx.store_path, mounts)
    facts["store_usage"] = system.disk_usage(ctx.store_path)
    if facts["store_usage"] is None:
        facts["errors"]["store_usage"] = f"cannot stat the file system of {ctx.store_path}"
    gens: dict[str, int] = {}
    for name, disk in facts["disks"].items():
        if disk.get("tran") != "nvme":
            continue
        for sub in ("device/device/current_link_speed", "device/current_link_speed"):
            raw = system.read(f"/sys/class/block/{name}/{sub}")
            if raw:
                gen = GT_S_TO_GEN.get(raw.split()[0])
                if gen:
                    gens[name] = gen
                break
    facts["pcie_gen"] = gens
    return facts

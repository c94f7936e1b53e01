"""RAID / redundancy health: parsers for ``/proc/mdstat``, ``mdadm --detail`` and ``zpool status -x``, a
summary with alerts, and a planning helper that prints the mdadm commands for a mirror of two *empty* disks
and refuses anything populated (the node specification warns that building RAID wipes the disks).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from incisive.common.errors import InputError

_MD_HEAD = re.compile(r"^(md[\w/]+)\s*:\s*(active|inactive)(?:\s+\((?:auto-)?read-only\))?\s*(\S+)?\s*(.*)$")
_MEMBER = re.compile(r"(\w[\w-]*)\[(\d+)\]((?:\([A-Z]\))*)")
_STATUS = re.compile(r"\[(\d+)/(\d+)\]\s+\[([U_]+)\]")
_SYNC = re.compile(r"(recovery|resync|reshape|check)\s*=\s*([\d.]+)%(?:.*finish=(\S+))?")


def _health(degraded: bool, rebuilding: bool, down: bool = False) -> str:
    if down:
        return "failed"
    if rebuilding:
        return "rebuilding"
    return "degraded" if degraded else "clean"


def parse_mdstat(text: str) -> list[dict[str, Any]]:
    arrays: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for line in text.splitlines():
        head = _MD_HEAD.match(line)
        if head:
            level = head.group(3) if head.group(3) and not _MEMBER.match(head.group(3)) else None
            members_text = head.group(4) if level else f"{head.group(3) or ''} {head.group(4)}"
            members = [{"device": m.group(1), "role": int(m.group(2)), "failed": "(F)" in m.group(3),
                        "spare": "(S)" in m.group(3)} for m in _MEMBER.finditer(members_text)]
            cur = {"name": head.group(1), "state": head.group(2), "level": level, "members": members,
                   "devices": None, "working": None, "map": None, "sync": None, "progress": None, "finish": None}
            arrays.append(cur)
            continue
        if cur is None:
            continue
        status = _STATUS.search(line)
        if status:
            cur.update(devices=int(status.group(1)), working=int(status.group(2)), map=status.group(3))
        sync = _SYNC.search(line)
        if sync:
            cur.update(sync=sync.group(1), progress=float(sync.group(2)), finish=sync.group(3))
        if not line.strip():
            cur = None
    for a in arrays:
        failed = any(m["failed"] for m in a["members"])
        degraded = a["working"] is not None and a["working"] < a["devices"]
        rebuilding = a["sync"] in ("recovery", "reshape") or (a["sync"] == "resync" and degraded)
        a["failed_members"] = [m["device"] for m in a["members"] if m["failed"]]
        a["health"] = _health(degraded or failed, rebuilding, a["state"] == "inactive")
    return arrays


def parse_mdadm_detail(text: str) -> dict[str, Any]:
    fields: dict[str, str] = {}
    devices: list[dict[str, Any]] = []
    in_table = False
    for line in text.splitlines():
        if re.match(r"\s*Number\s+Major\s+Minor\s+RaidDevice\s+State", line):
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if len(parts) >= 5:
                path = parts[-1] if parts[-1].startswith("/") else None
                state = " ".join(parts[4:-1] if path else parts[4:])
                devices.append({"device": path, "state": state})
            continue
        match = re.match(r"^\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*)$", line)
        if match:
            fields[match.group(1).strip().lower()] = match.group(2).strip()
    state = fields.get("state", "")
    words = {w.strip() for w in state.split(",")}
    rebuild = re.match(r"(\d+)%", fields.get("rebuild status", ""))
    failed = int(fields.get("failed devices", "0") or 0) > 0 or any("faulty" in d["state"] for d in devices)
    degraded = "degraded" in words or failed or any(d["state"] == "removed" for d in devices)
    rebuilding = bool(words & {"recovering", "resyncing", "reshaping"}) or rebuild is not None
    return {"level": fields.get("raid level"), "state": state, "raid_devices": _int(fields.get("raid devices")),
            "active": _int(fields.get("active devices")), "working": _int(fields.get("working devices")),
            "failed": _int(fields.get("failed devices")), "spare": _int(fields.get("spare devices")),
            "rebuild_percent": int(rebuild.group(1)) if rebuild else None, "devices": devices,
            "failed_members": [d["device"] for d in devices if "faulty" in d["state"]],
            "health": _health(degraded, rebuilding, bool(words & {"inactive", "failed", "FAILED"}))}


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def parse_zpool_status(text: str) -> list[dict[str, Any]]:
    """``zpool status -x``: [] when all pools are healthy or there are none, else one entry per pool."""
    pools: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    in_config = False
    for line in text.splitlines():
        match = re.match(r"^\s*(pool|state|scan|status):\s*(.*)$", line)
        if match and match.group(1) == "pool":
            cur = {"pool": match.group(2).strip(), "state": None, "scan": "", "bad_devices": []}
            pools.append(cur)
            in_config = False
            continue
        if cur is None:
            continue
        if match and match.group(1) in ("state", "scan"):
            cur[match.group(1)] = match.group(2).strip()
        elif line.strip().startswith("config:"):
            in_config = True
        elif line.strip().startswith("errors:"):
            in_config = False
        elif in_config:
            parts = line.split()
            if len(parts) >= 2 and parts[0] not in ("NAME", cur["pool"]) and parts[1] not in ("ONLINE", "STATE"):
                cur["bad_devices"].append({"device": parts[0], "state": parts[1]})
    for p in pools:
        state = (p["state"] or "").upper()
        rebuilding = "resilver in progress" in p["scan"]
        p["health"] = ("failed" if state in ("FAULTED", "UNAVAIL", "SUSPENDED") else
                       "rebuilding" if rebuilding else "degraded" if state != "ONLINE" else "clean")
    return pools


Runner = Callable[[list[str]], str | None]  # argv -> stdout, or None when the tool is absent or fails


def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def raid_health(mdstat: Path = Path("/proc/mdstat"), run: Runner = _run) -> dict[str, Any]:
    arrays = parse_mdstat(mdstat.read_text()) if mdstat.is_file() else []
    for a in arrays:
        detail = run(["mdadm", "--detail", f"/dev/{a['name']}"])
        if detail:
            d = parse_mdadm_detail(detail)
            a["detail_state"] = d["state"]
            failed = {m.removeprefix("/dev/") for m in d["failed_members"] if m}
            a["failed_members"] = sorted(set(a["failed_members"]) | failed)
            if d["health"] != "clean" and a["health"] == "clean":
                a["health"] = d["health"]
    zpool = run(["zpool", "status", "-x"])
    pools = parse_zpool_status(zpool) if zpool else []
    alerts = []
    for a in arrays:
        if a["health"] != "clean":
            extra = f" (failed: {', '.join(a['failed_members'])})" if a["failed_members"] else ""
            progress = f", {a['progress']}% rebuilt" if a["health"] == "rebuilding" and a["progress"] else ""
            alerts.append(f"RAID array {a['name']} is {a['health']}{extra}{progress}")
    for p in pools:
        alerts.append(f"ZFS pool {p['pool']} is {p['health']} ({p['state']})")
    return {"md": arrays, "zfs": pools, "alerts": alerts, "redundant": bool(arrays or zpool)}


@dataclass
class Device:
    path: str
    exists: bool = True
    block: bool = True
    size: int = 0
    mounted: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)  # partitions / holders (e.g. an md array)
    signatures: list[str] = field(default_factory=list)  # filesystem / partition-table / raid signatures


def probe(path: str) -> Device:
    """What is on a disk: lsblk (partitions, mounts, fstype) and wipefs (signatures), read-only."""
    p = Path(path)
    if not p.exists():
        return Device(path, exists=False, block=False)
    if not p.is_block_device():
        return Device(path, block=False, children=[c.name for c in p.iterdir()] if p.is_dir() else [])
    dev = Device(path)
    raw = _run(["lsblk", "--json", "--bytes", "-o", "NAME,TYPE,SIZE,FSTYPE,MOUNTPOINT,PTTYPE", path])
    if raw:
        node = (json.loads(raw).get("blockdevices") or [{}])[0]
        dev.size = int(node.get("size") or 0)
        dev.signatures += [s for s in (node.get("fstype"), node.get("pttype")) if s]
        dev.mounted += [node["mountpoint"]] if node.get("mountpoint") else []
        for child in node.get("children") or []:
            dev.children.append(str(child.get("name")))
            dev.mounted += [child["mountpoint"]] if child.get("mountpoint") else []
    sig = _run(["wipefs", "--no-act", "--json", path])
    if sig:
        dev.signatures += [str(s.get("type")) for s in json.loads(sig).get("signatures", [])]
    return dev


def plan_mirror(paths: list[str], probe_fn: Callable[[str], Device] = probe, md: str = "/dev/md0",
                mountpoint: str = "/srv/incisive") -> list[str]:
    """The commands to build a RAID1 mirror on two empty disks; InputError for anything populated."""
    if len(paths) != 2:
        raise InputError("give exactly two empty disks for a RAID1 mirror")
    devices = [probe_fn(p) for p in paths]
    for d in devices:
        if not d.exists:
            raise InputError(f"{d.path} does not exist")
        if not d.block:
            what = "a populated volume" if d.children else "a directory, not a disk"
            raise InputError(f"{d.path} is {what}: RAID is built from whole empty disks, and building it erases "
                             "them; move the data elsewhere first")
        if d.mounted or d.children or d.signatures:
            found = ", ".join([*(f"mounted at {m}" for m in d.mounted), *(f"partition {c}" for c in d.children),
                               *(f"{s} signature" for s in d.signatures)])
            raise InputError(f"refusing to plan RAID on {d.path}: it is in use ({found}); building an array "
                             "would destroy that data")
    if devices[0].size and devices[1].size and abs(devices[0].size - devices[1].size) > 0.05 * max(
            devices[0].size, devices[1].size):
        raise InputError("the two disks differ in size by more than 5 %; the mirror would waste the difference")
    a, b = (shlex.quote(d.path) for d in devices)
    return [
        f"# RAID1 mirror of {a} and {b} — both are empty; these commands ERASE them",
        f"sudo mdadm --create {md} --level=1 --raid-devices=2 --bitmap=internal {a} {b}",
        f"sudo mkfs.ext4 -L incisive-data {md}",
        f"sudo mkdir -p {mountpoint}",
        f"echo \"UUID=$(sudo blkid -s UUID -o value {md}) {mountpoint} ext4 defaults,nofail 0 2\" "
        "| sudo tee -a /etc/fstab",
        f"sudo mount {mountpoint}",
        "sudo mdadm --detail --scan | sudo tee -a /etc/mdadm/mdadm.conf",
        "sudo update-initramfs -u",
        f"cat /proc/mdstat   # the initial resync runs in the background; {mountpoint} is usable meanwhile",
    ]

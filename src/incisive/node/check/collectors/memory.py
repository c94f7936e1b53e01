"""RAM: total from /proc/meminfo; ECC, type and slots from ``dmidecode -t memory`` (root) or EDAC."""

from __future__ import annotations

import re

from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System

_SIZE = re.compile(r"^(\d+)\s*(MB|GB|TB)$")
_UNIT = {"MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _records(text: str) -> list[tuple[str, dict[str, str]]]:
    """dmidecode output as (record title, fields) pairs."""
    records: list[tuple[str, dict[str, str]]] = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        if len(lines) < 2 or not lines[0].startswith("Handle"):
            continue
        fields: dict[str, str] = {}
        for line in lines[2:]:
            key, sep, value = line.strip().partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        records.append((lines[1].strip(), fields))
    return records


def parse_dmidecode_memory(text: str) -> Facts:
    arrays = [f for title, f in _records(text) if title == "Physical Memory Array"]
    devices = [f for title, f in _records(text) if title == "Memory Device"]
    modules: list[Facts] = []
    for dev in devices:
        match = _SIZE.match(dev.get("Size", ""))
        if match:
            modules.append({
                "size_bytes": int(match.group(1)) * _UNIT[match.group(2)],
                "type": dev.get("Type", "Unknown"),
                "locator": dev.get("Locator", ""),
                "total_width": dev.get("Total Width", ""),
                "data_width": dev.get("Data Width", ""),
            })
    system_arrays = [a for a in arrays if a.get("Use", "System Memory") == "System Memory"] or arrays
    ecc_types = {a.get("Error Correction Type", "Unknown") for a in system_arrays}
    slot_counts = [int(a["Number Of Devices"]) for a in system_arrays if a.get("Number Of Devices", "").isdigit()]
    return {
        "ecc_type": ", ".join(sorted(ecc_types)) if ecc_types else None,
        "slots": sum(slot_counts) if slot_counts else len(devices) or None,
        "modules": modules,
        "installed_bytes": sum(m["size_bytes"] for m in modules) or None,
        "types": sorted({m["type"] for m in modules}),
    }


def collect(system: System, ctx: CheckContext) -> Facts:
    facts: Facts = {"errors": {}}
    meminfo = system.read("/proc/meminfo")
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo or "", re.MULTILINE)
    facts["visible_bytes"] = int(match.group(1)) * 1024 if match else None
    if match is None:
        facts["errors"]["visible_bytes"] = "/proc/meminfo not readable"
    dmi = system.run("dmidecode-memory")
    if dmi.ok and "Memory Device" in dmi.stdout:
        facts["dmi"] = parse_dmidecode_memory(dmi.stdout)
    else:
        facts["dmi"] = None
        facts["errors"]["dmi"] = dmi.reason if not dmi.ok else "dmidecode found no memory devices (VM?)"
    mcs = [m for m in (system.listdir("/sys/devices/system/edac/mc") or []) if m.startswith("mc")]
    facts["edac_controllers"] = len(mcs)
    return facts

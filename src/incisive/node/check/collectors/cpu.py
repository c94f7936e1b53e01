"""CPU: vendor, model, physical cores, threads and base clock from /proc/cpuinfo and cpufreq."""

from __future__ import annotations

import re

from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System

VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}
_GHZ_IN_NAME = re.compile(r"@\s*([0-9.]+)\s*GHz", re.IGNORECASE)


def parse_cpuinfo(text: str) -> Facts:
    """Vendor, model, thread count and physical core count (unique package/core pairs)."""
    processors: list[dict[str, str]] = []
    for block in text.strip().split("\n\n"):
        entry: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip()] = value.strip()
        if "processor" in entry:
            processors.append(entry)
    if not processors:
        return {}
    first = processors[0]
    cores = {(p.get("physical id", "0"), p["core id"]) for p in processors if "core id" in p}
    mhz = [float(p["cpu MHz"]) for p in processors if _is_float(p.get("cpu MHz", ""))]
    return {
        "vendor": VENDORS.get(first.get("vendor_id", ""), first.get("vendor_id") or first.get("CPU implementer")),
        "model": first.get("model name", first.get("Hardware", "unknown model")),
        "threads": len(processors),
        "cores": len(cores) if cores else len(processors),
        "sockets": len({p.get("physical id", "0") for p in processors}),
        "current_mhz": max(mhz) if mhz else None,
    }


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def collect(system: System, ctx: CheckContext) -> Facts:
    facts: Facts = {"errors": {}}
    text = system.read("/proc/cpuinfo")
    if text is None:
        facts["errors"]["cpuinfo"] = f"/proc/cpuinfo not readable (platform {system.platform()})"
        return facts
    facts.update(parse_cpuinfo(text))
    # Base clock: from the model name ("@ 2.40GHz"), else intel_pstate's base_frequency, else the max clock.
    base_ghz: float | None = None
    source = ""
    match = _GHZ_IN_NAME.search(str(facts.get("model", "")))
    if match:
        base_ghz, source = float(match.group(1)), "model name"
    else:
        for name, label in (("base_frequency", "base frequency"), ("cpuinfo_max_freq", "max frequency")):
            raw = system.read(f"/sys/devices/system/cpu/cpu0/cpufreq/{name}")
            if raw and raw.strip().isdigit():
                base_ghz, source = int(raw.strip()) / 1e6, label
                break
    if base_ghz is None and facts.get("current_mhz"):
        base_ghz, source = float(facts["current_mhz"]) / 1000, "current clock"
    facts["base_ghz"] = round(base_ghz, 2) if base_ghz is not None else None
    facts["ghz_source"] = source
    return facts

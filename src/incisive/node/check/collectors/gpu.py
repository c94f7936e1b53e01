"""GPU: NVML (nvidia-ml-py), else ``nvidia-smi``; PCI scan for cards without a driver; Secure Boot state."""

from __future__ import annotations

from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System

NVIDIA_VENDOR = "0x10de"
DISPLAY_CLASSES = ("0x0300", "0x0302")  # VGA controller, 3D controller


def parse_nvidia_smi(text: str) -> list[Facts]:
    gpus: list[Facts] = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        name, mib, driver, cap = parts[:4]
        gpus.append({
            "name": name,
            "memory_bytes": int(float(mib) * 1024**2) if _number(mib) else None,
            "driver": driver,
            "compute_cap": cap if _number(cap) else None,
        })
    return gpus


def _number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def pci_display_devices(system: System) -> list[Facts] | None:
    """Display controllers on the PCI bus (vendor id, class), or None when sysfs is not readable."""
    entries = system.listdir("/sys/bus/pci/devices")
    if entries is None:
        return None
    found: list[Facts] = []
    for entry in entries:
        cls = (system.read(f"/sys/bus/pci/devices/{entry}/class") or "").strip()
        if cls.startswith(DISPLAY_CLASSES):
            vendor = (system.read(f"/sys/bus/pci/devices/{entry}/vendor") or "").strip()
            found.append({"slot": entry, "vendor": vendor, "class": cls})
    return found


def collect(system: System, ctx: CheckContext) -> Facts:
    facts: Facts = {"errors": {}, "source": None, "gpus": []}
    nvml = system.nvml()
    if isinstance(nvml, list):
        facts["gpus"], facts["source"] = nvml, "NVML"
    else:
        facts["errors"]["nvml"] = nvml
        smi = system.run("nvidia-smi")
        if smi.ok:
            facts["gpus"], facts["source"] = parse_nvidia_smi(smi.stdout), "nvidia-smi"
        else:
            facts["errors"]["nvidia-smi"] = smi.reason
    pci = pci_display_devices(system)
    facts["pci"] = pci
    if pci is None:
        facts["errors"]["pci"] = "/sys/bus/pci not readable"
    facts["nvidia_pci"] = sum(1 for d in pci or [] if d["vendor"] == NVIDIA_VENDOR)
    modules = system.read("/proc/modules")
    facts["nvidia_module_loaded"] = (
        None if modules is None else any(line.split(" ", 1)[0] == "nvidia" for line in modules.splitlines())
    )
    sb = system.run("mokutil-sb-state")
    text = (sb.stdout + sb.stderr).lower()
    if "secureboot enabled" in text:
        facts["secure_boot"] = True
    elif "secureboot disabled" in text or "not supported" in text:
        facts["secure_boot"] = False
    else:
        facts["secure_boot"] = None
        facts["errors"]["secure_boot"] = sb.reason if not sb.ok else "unexpected mokutil output"
    signer = system.run("modinfo-nvidia-signer")
    if signer.ok:
        facts["nvidia_module_signed"] = bool(signer.stdout.strip())
    else:
        facts["nvidia_module_signed"] = None
        facts["errors"]["nvidia_module_signed"] = signer.reason
    return facts

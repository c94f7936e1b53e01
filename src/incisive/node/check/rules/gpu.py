"""Rules for the GPU: NVIDIA, memory, architecture, driver, Secure Boot vs unsigned driver modules."""

from __future__ import annotations

from incisive.node.check.model import Facts, Row, Verdict
from incisive.node.check.profiles import CheckContext, Profile
from incisive.node.check.rules.common import row, unknown, why

ARCHS = ((10.0, "Blackwell"), (9.0, "Hopper"), (8.9, "Ada Lovelace"), (8.0, "Ampere"), (7.5, "Turing"),
         (7.0, "Volta"), (6.0, "Pascal"), (5.0, "Maxwell"), (3.0, "Kepler"))


def architecture(compute_cap: str | None) -> str:
    if not compute_cap:
        return "unknown architecture"
    cap = float(compute_cap)
    name = next((label for floor, label in ARCHS if cap >= floor), "pre-Kepler")
    return f"{name} (compute capability {compute_cap})"


def judge_gpu(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    gpu = facts.get("gpu") or {}
    gpus: list[Facts] = gpu.get("gpus") or []
    req_model = "NVIDIA GPU"
    if not gpus and not gpu.get("nvidia_pci"):
        if gpu.get("pci") is None:
            return [unknown("gpu.model", req_model, why(gpu, "nvml", "pci"),
                            "run the check on the node itself (NVML/nvidia-smi or /sys/bus/pci needed)")]
        others = len(gpu.get("pci") or [])
        measured = f"no NVIDIA GPU ({others} other display controller(s))"
        verdict = Verdict.PASS if p.name == "demo" else Verdict.WARN
        return [row("gpu.model", req_model, measured, verdict,
                    "add an NVIDIA GPU (≥ 12 GB) or meet the CPU-only requirement (see cpu.threads)")]
    rows: list[Row] = []
    if not gpus:  # NVIDIA hardware on the bus, but neither NVML nor nvidia-smi answers
        rows.append(row("gpu.model", req_model, f"{gpu['nvidia_pci']} NVIDIA device(s) on the PCI bus",
                        Verdict.PASS))
        rows.append(row("gpu.driver", "NVIDIA driver loaded (NVML or nvidia-smi)",
                        f"not loaded: {why(gpu, 'nvml')}; {why(gpu, 'nvidia-smi')}", Verdict.FAIL,
                        "install the NVIDIA driver (e.g. 'ubuntu-drivers install') and reboot"))
    else:
        names = ", ".join(sorted({str(g["name"]) for g in gpus}))
        rows.append(row("gpu.model", req_model, f"{len(gpus)}× {names}", Verdict.PASS))
        best_mem = max(int(g.get("memory_bytes") or 0) for g in gpus)
        req_mem = f"≥ {p.gpu_min_vram_gb:g} GB VRAM preferred"
        if best_mem:
            ok = best_mem >= p.gpu_min_vram_gb * 1024**3 * 0.97
            rows.append(row("gpu.memory", req_mem, f"{best_mem / 1024**3:.0f} GB", Verdict.PASS if ok else
                            Verdict.WARN, f"a GPU with ≥ {p.gpu_min_vram_gb:g} GB allows larger 3D models"))
        else:
            rows.append(unknown("gpu.memory", req_mem, "memory size not reported", "check with nvidia-smi"))
        req_arch = "Volta or newer (Ampere recommended)"
        caps = [str(g["compute_cap"]) for g in gpus if g.get("compute_cap")]
        if caps:
            best = max(caps, key=float)
            ok = float(best) >= p.gpu_min_compute_cap
            rows.append(row("gpu.architecture", req_arch, architecture(best), Verdict.PASS if ok else Verdict.FAIL,
                            "replace the GPU with a Volta/Turing/Ampere or newer card"))
        else:
            rows.append(unknown("gpu.architecture", req_arch, "compute capability not reported (old driver?)",
                                "update the NVIDIA driver (≥ 510 reports the compute capability)"))
        driver = str(gpus[0].get("driver") or "?")
        rows.append(row("gpu.driver", "NVIDIA driver loaded (NVML or nvidia-smi)",
                        f"driver {driver} (via {gpu.get('source')})", Verdict.PASS))
    rows.append(_secure_boot(gpu))
    return rows


def _secure_boot(gpu: Facts) -> Row:
    req = "Secure Boot: NVIDIA kernel module signed (or Secure Boot off)"
    sb, signed = gpu.get("secure_boot"), gpu.get("nvidia_module_signed")
    if sb is None:
        return unknown("gpu.secure-boot", req, why(gpu, "secure_boot"), "install mokutil to read the Secure "
                       "Boot state")
    if sb is False:
        return row("gpu.secure-boot", req, "Secure Boot off", Verdict.PASS)
    if signed is True:
        return row("gpu.secure-boot", req, "Secure Boot on; nvidia module signed", Verdict.PASS)
    if signed is False:
        return row("gpu.secure-boot", req, "Secure Boot on; nvidia module unsigned", Verdict.FAIL,
                   "sign the module with an enrolled MOK key (DKMS + 'mokutil --import'), or use signed drivers")
    return unknown("gpu.secure-boot", req, f"Secure Boot on; module signature: {why(gpu, 'nvidia_module_signed')}",
                   "check 'modinfo -F signer nvidia'")

"""Rules for CPU, RAM, storage and GPU."""

from __future__ import annotations

from incisive.node.check.model import Facts, Row, Verdict, fmt_bytes
from incisive.node.check.profiles import CheckContext, Profile
from incisive.node.check.rules.common import is_vm, row, unknown, why

GIB = 1024**3
VISIBLE_SLACK = 1.07  # MemTotal is a few % below the installed size (firmware, kernel reservations)
DISK_SLACK = 0.95  # a "1 TB" drive may hold 960 GB



def has_nvidia_gpu(gpu: Facts | None) -> bool | None:
    """True/False when known; None when neither NVML, nvidia-smi nor the PCI bus could be read."""
    if not gpu:
        return None
    if gpu.get("gpus") or gpu.get("nvidia_pci"):
        return True
    return None if gpu.get("pci") is None else False


def judge_cpu(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    cpu = facts.get("cpu") or {}
    req_cores = (f"≥ {p.intel_min_cores} cores (Intel, ≥ {p.intel_min_ghz:g} GHz) or ≥ {p.amd_min_cores} cores "
                 f"(AMD, ≥ {p.amd_min_ghz:g} GHz)")
    req_threads = f"≥ {p.ideal_threads} threads ideal; without a GPU ≥ {p.cpu_only_min_threads} required"
    if not cpu.get("threads"):
        reason = why(cpu, "cpuinfo")
        how = "run the check on the Linux node itself"
        return [unknown("cpu.cores", req_cores, reason, how), unknown("cpu.threads", req_threads, reason, how)]
    vendor, cores, threads, ghz = cpu.get("vendor"), int(cpu["cores"]), int(cpu["threads"]), cpu.get("base_ghz")
    clock = f"{ghz:.2f} GHz ({cpu.get('ghz_source')})" if ghz else "clock not reported"
    model = str(cpu.get("model"))
    measured = f"{model if str(vendor) in model else f'{vendor} {model}'}: {cores} cores, {clock}"
    rows: list[Row] = []
    minimum = {"Intel": (p.intel_min_cores, p.intel_min_ghz), "AMD": (p.amd_min_cores, p.amd_min_ghz)}
    if vendor not in minimum:
        rows.append(row("cpu.cores", req_cores, measured, Verdict.FAIL, "the specification needs an x86-64 "
                        "Intel or AMD CPU"))
    else:
        min_cores, min_ghz = minimum[str(vendor)]
        fix: str | None
        if cores < min_cores:
            verdict, fix = Verdict.FAIL, f"use a CPU with ≥ {min_cores} physical cores ({vendor})"
            if is_vm(facts):
                fix = f"give the VM ≥ {min_cores} vCPUs (same requirements apply to a VM)"
        elif ghz is None:
            verdict, fix = Verdict.WARN, "check the CPU's base clock in the vendor's data sheet"
        elif ghz < min_ghz:
            verdict, fix = Verdict.FAIL, f"{vendor} CPUs need a base clock ≥ {min_ghz:g} GHz"
        else:
            verdict, fix = Verdict.PASS, None
        rows.append(row("cpu.cores", req_cores, measured, verdict, fix))
    gpu = has_nvidia_gpu(facts.get("gpu"))
    measured_t = f"{threads} threads; GPU {'present' if gpu else 'absent' if gpu is False else 'unknown'}"
    if threads >= p.ideal_threads:
        rows.append(row("cpu.threads", req_threads, measured_t, Verdict.PASS))
    elif gpu is False and threads < p.cpu_only_min_threads:
        rows.append(row("cpu.threads", req_threads, measured_t, Verdict.FAIL,
                        f"without a GPU use a server CPU with ≥ {p.cpu_only_min_threads} threads, or add an "
                        "NVIDIA GPU"))
    else:
        rows.append(row("cpu.threads", req_threads, measured_t, Verdict.WARN,
                        f"{p.ideal_threads}+ threads recommended for training and imports"))
    return rows


def judge_memory(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    mem = facts.get("memory") or {}
    dmi: Facts | None = mem.get("dmi")
    rows: list[Row] = []
    req = f"≥ {p.ram_min_gb:g} GB (≥ {p.ram_later_gb:g} GB needed later)"
    installed, visible = (dmi or {}).get("installed_bytes"), mem.get("visible_bytes")
    if installed:
        size_gib, measured = installed / GIB, f"{installed / GIB:.0f} GB installed"
    elif visible:
        size_gib, measured = visible / GIB * VISIBLE_SLACK, f"{visible / GIB:.1f} GiB visible to the OS"
    else:
        size_gib, measured = None, ""
    if size_gib is None:
        rows.append(unknown("memory.size", req, why(mem, "visible_bytes"), "run the check on the Linux node"))
    elif size_gib < p.ram_min_gb:
        rows.append(row("memory.size", req, measured, Verdict.FAIL, f"install ≥ {p.ram_min_gb:g} GB RAM"))
    elif size_gib < p.ram_later_gb:
        rows.append(row("memory.size", req, measured, Verdict.WARN,
                        f"plan an upgrade to {p.ram_later_gb:g} GB (needed later)"))
    else:
        rows.append(row("memory.size", req, measured, Verdict.PASS))
    req_ecc = "ECC memory recommended"
    ecc_type = (dmi or {}).get("ecc_type")
    if ecc_type and "ECC" in ecc_type:
        rows.append(row("memory.ecc", req_ecc, ecc_type, Verdict.PASS))
    elif ecc_type:
        rows.append(row("memory.ecc", req_ecc, f"error correction: {ecc_type}", p.no_ecc,
                        "use ECC modules on an ECC-capable board (workstation/server chipset)"))
    elif mem.get("edac_controllers"):
        rows.append(row("memory.ecc", req_ecc, "ECC (EDAC memory controller active)", Verdict.PASS))
    else:
        rows.append(unknown("memory.ecc", req_ecc, why(mem, "dmi"), "run 'sudo incisive node check' so "
                            "dmidecode can read the memory tables"))
    vm = is_vm(facts)
    for rid, requirement in (("memory.type", "DDR5 ideal"), ("memory.slots", "≥ 4 slots, modules leave "
                                                                           "slots free (e.g. 2×32 GB)")):
        if rid in p.skip:
            continue
        if vm:
            rows.append(row(rid, requirement, "virtual machine: decided by the host's hardware", Verdict.PASS))
        elif dmi is None or not dmi.get("modules"):
            rows.append(unknown(rid, requirement, why(mem, "dmi"), "run 'sudo incisive node check' so dmidecode "
                                "can read the memory tables"))
        elif rid == "memory.type":
            types = ", ".join(dmi["types"])
            ok = all(t.startswith(("DDR5", "LPDDR5")) for t in dmi["types"])
            rows.append(row(rid, requirement, types, Verdict.PASS if ok else Verdict.WARN,
                            "DDR5 is ideal for the next hardware refresh"))
        else:
            slots, modules = int(dmi.get("slots") or 0), dmi["modules"]
            sizes = sorted({m["size_bytes"] for m in modules})
            layout = " + ".join(f"{sum(1 for m in modules if m['size_bytes'] == s)}×{s // GIB} GB" for s in sizes)
            measured = f"{len(modules)} of {slots} slots used ({layout})"
            if slots < 4:
                rows.append(row(rid, requirement, measured, Verdict.WARN, "a board with ≥ 4 memory slots "
                                "allows the later upgrade to 128 GB"))
            elif len(modules) >= slots:
                rows.append(row(rid, requirement, measured, Verdict.WARN, "all slots are used: upgrading needs "
                                "larger modules; prefer 2×32 GB for 64 GB"))
            else:
                rows.append(row(rid, requirement, measured, Verdict.PASS))
    return rows


def _disk_kind(disk: Facts, gen: int | None) -> str:
    if disk.get("tran") == "nvme":
        return f"NVMe Gen{gen}" if gen else "NVMe"
    media = "HDD" if disk.get("rota") else "SSD"
    return f"{str(disk.get('tran') or 'virtual').upper()} {media}"


def judge_storage(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    st = facts.get("storage") or {}
    rows: list[Row] = []
    req_os, req_type = f"OS disk ≥ {p.os_disk_min_tb:g} TB", "OS disk NVMe (Gen4 ideal) or SATA SSD"
    req_data = f"separate data disk/volume ≥ {p.data_disk_min_tb:g} TB for the store (SSD preferred)"
    req_free = f"free space on the store volume ≥ {p.store_min_free_gb:g} GB and ≥ 10 %"
    disks: dict[str, Facts] = st.get("disks") or {}
    devices: list[Facts] = st.get("devices") or []
    os_disks = sorted({d["disk"] for d in devices if "/" in d["mountpoints"]})
    if not disks or not os_disks:
        reason = why(st, "lsblk") if not disks else "no block device is mounted at / (container or overlay root)"
        fix = "run the check on the node itself (not in a container) with lsblk installed"
        rows.append(unknown("storage.os-disk", req_os, reason, fix))
        if "storage.os-disk-type" not in p.skip:
            rows.append(unknown("storage.os-disk-type", req_type, reason, fix))
    else:
        os_disk = disks[os_disks[0]]
        size = min(disks[d]["size"] for d in os_disks)
        names = "+".join(os_disks)
        verdict = Verdict.PASS if size >= p.os_disk_min_tb * 1e12 * DISK_SLACK else Verdict.FAIL
        rows.append(row("storage.os-disk", req_os, f"{names}: {fmt_bytes(size)}", verdict,
                        f"use an OS disk of ≥ {p.os_disk_min_tb:g} TB"))
        if "storage.os-disk-type" not in p.skip:
            gen = (st.get("pcie_gen") or {}).get(os_disk["name"])
            kind = _disk_kind(os_disk, gen)
            type_fix: str | None
            if os_disk.get("tran") == "nvme":
                verdict, type_fix = (Verdict.WARN, "NVMe Gen4 is ideal") if gen and gen < 4 else (Verdict.PASS, None)
            elif not os_disk.get("rota"):
                verdict, type_fix = Verdict.PASS, None
            elif is_vm(facts):
                verdict, type_fix = Verdict.WARN, "the virtual disk reports rotational: back it with SSD storage"
            else:
                verdict, type_fix = Verdict.FAIL, "move the OS to an NVMe or SATA SSD"
            rows.append(row("storage.os-disk-type", req_type, f"{names}: {kind}", verdict, type_fix))
    rows.append(_data_disk(st, p, req_data, disks, devices, os_disks))
    usage = st.get("store_usage")
    if usage is None:
        rows.append(unknown("storage.store-free", req_free, why(st, "store_usage"),
                            "create the store directory (incisive node init) or pass --store"))
    else:
        total, free = usage
        measured = f"{fmt_bytes(free)} free of {fmt_bytes(total)} at {st.get('store_path')}"
        ratio = free / total if total else 0.0
        if free < p.store_min_free_gb * 1e9 / 2 or ratio < 0.05:
            verdict = Verdict.FAIL
        elif free < p.store_min_free_gb * 1e9 or ratio < 0.10:
            verdict = Verdict.WARN
        else:
            verdict = Verdict.PASS
        rows.append(row("storage.store-free", req_free, measured, verdict,
                        "free space on the store volume or extend it (incisive node gc / larger disk)"))
    return rows


def _data_disk(st: Facts, p: Profile, req: str, disks: dict[str, Facts], devices: list[Facts],
               os_disks: list[str]) -> Row:
    mount = st.get("store_mount")
    if not disks:
        return unknown("storage.data-disk", req, why(st, "lsblk"), "run the check on the node with lsblk")
    minimum = p.data_disk_min_tb * 1e12 * DISK_SLACK
    if mount and mount[1] != "/":
        device = str(mount[0]).rsplit("/", 1)[-1]
        nodes = [d for d in devices if d["name"] == device]
        usage = st.get("store_usage")
        size = usage[0] if usage else max((n["size"] for n in nodes), default=0)
        rota = any(n.get("rota") for n in nodes)
        label = nodes[0]["type"] if nodes else "volume"
        measured = f"{st.get('store_path')} on {device} ({label}, {'HDD' if rota else 'SSD'}, {fmt_bytes(size)})"
        if size < minimum:
            return row("storage.data-disk", req, measured, Verdict.FAIL,
                       f"put the store on a volume of ≥ {p.data_disk_min_tb:g} TB")
        if rota:
            return row("storage.data-disk", req, measured, Verdict.WARN, "an SSD is preferred for the store")
        return row("storage.data-disk", req, measured, Verdict.PASS)
    spare = [d for name, d in disks.items() if name not in os_disks and d["size"] >= minimum
             and not name.startswith(("zram", "loop", "sr"))]
    where = f"{st.get('store_path')} is on the OS volume"
    if not p.separate_data_disk:
        return row("storage.data-disk", req, where, Verdict.PASS)
    if spare:
        names = ", ".join(f"{d['name']} ({fmt_bytes(d['size'])})" for d in spare)
        return row("storage.data-disk", req, f"{where}; unused candidate: {names}", Verdict.WARN,
                   "mount the data disk and create the node store on it (incisive node init <mountpoint>)")
    return row("storage.data-disk", req, f"{where}; no other disk ≥ {p.data_disk_min_tb:g} TB", Verdict.FAIL,
               f"add a separate data disk of ≥ {p.data_disk_min_tb:g} TB (SSD) for the node store")

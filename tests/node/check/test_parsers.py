"""Collector parsers and rule edge cases on recorded snippets."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from incisive.node.check import CheckContext, Row, Verdict, exit_code, get_profile
from incisive.node.check.collectors.access import parse_pwquality, parse_sshd
from incisive.node.check.collectors.cpu import parse_cpuinfo
from incisive.node.check.collectors.firewall import parse_iptables_save, parse_nft, parse_ufw
from incisive.node.check.collectors.gpu import parse_nvidia_smi
from incisive.node.check.collectors.memory import parse_dmidecode_memory
from incisive.node.check.collectors.network import addresses
from incisive.node.check.collectors.osinfo import parse_os_release
from incisive.node.check.collectors.redundancy import parse_mdstat
from incisive.node.check.collectors.storage import flatten, mount_of
from incisive.node.check.recorded import command_key
from incisive.node.check.rules.access import judge_redundancy
from incisive.node.check.rules.gpu import architecture, judge_gpu
from incisive.node.check.rules.hardware import judge_memory
from incisive.node.check.system import CommandResult

CTX = CheckContext(today=date(2026, 6, 1))
SPEC = get_profile("node-spec-1.1")


def test_cpuinfo_counts_physical_cores_across_sockets() -> None:
    blocks = [f"processor\t: {i}\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7313 16-Core Processor\n"
              f"physical id\t: {i // 32}\ncore id\t\t: {i % 16}\ncpu MHz\t\t: 3000.000\n" for i in range(64)]
    facts = parse_cpuinfo("\n".join(blocks))
    assert facts == {"vendor": "AMD", "model": "AMD EPYC 7313 16-Core Processor", "threads": 64, "cores": 32,
                     "sockets": 2, "current_mhz": 3000.0}
    assert parse_cpuinfo("") == {}


def test_dmidecode_non_ecc_desktop() -> None:
    text = ("Handle 0x0010, DMI type 16, 23 bytes\nPhysical Memory Array\n\tUse: System Memory\n"
            "\tError Correction Type: None\n\tNumber Of Devices: 2\n\n"
            "Handle 0x0011, DMI type 17, 92 bytes\nMemory Device\n\tSize: 16384 MB\n\tType: DDR4\n\n"
            "Handle 0x0012, DMI type 17, 92 bytes\nMemory Device\n\tSize: 16 GB\n\tType: DDR4\n")
    dmi = parse_dmidecode_memory(text)
    assert dmi["ecc_type"] == "None" and dmi["slots"] == 2 and dmi["types"] == ["DDR4"]
    assert dmi["installed_bytes"] == 32 * 1024**3
    facts: dict[str, Any] = {"memory": {"errors": {}, "visible_bytes": 33e9, "dmi": dmi, "edac_controllers": 0}}
    spec = {r.id: r for r in judge_memory(facts, SPEC, CTX)}
    assert spec["memory.ecc"].verdict is Verdict.WARN
    assert spec["memory.slots"].verdict is Verdict.WARN  # only 2 slots, both used
    central = {r.id: r for r in judge_memory(facts, get_profile("central"), CTX)}
    assert central["memory.ecc"].verdict is Verdict.FAIL


def test_ecc_from_edac_without_root() -> None:
    facts: dict[str, Any] = {"memory": {"errors": {"dmi": "dmidecode needs root"}, "visible_bytes": 135e9,
                                        "dmi": None, "edac_controllers": 2}}
    rows = {r.id: r for r in judge_memory(facts, SPEC, CTX)}
    assert rows["memory.ecc"].verdict is Verdict.PASS
    assert rows["memory.size"].verdict is Verdict.PASS  # 125.7 GiB visible ≈ 128 GB installed


def test_lsblk_flatten_and_mounts() -> None:
    tree = json.loads('{"blockdevices": [{"name": "sda", "type": "disk", "size": "100", "rota": "1", '
                      '"tran": "sata", "model": "X", "mountpoint": null, "children": [{"name": "sda1", '
                      '"type": "part", "size": "99", "rota": "1", "mountpoint": "/"}]}]}')
    nodes = flatten(tree["blockdevices"])  # util-linux < 2.37: MOUNTPOINT and string booleans
    assert nodes[1] == {"name": "sda1", "type": "part", "size": 99, "rota": True, "tran": None, "model": None,
                        "mountpoints": ["/"], "disk": "sda"}
    mounts = [("/dev/sda1", "/"), ("/dev/sdb1", "/srv"), ("/dev/sdc1", "/srv/incisive")]
    assert mount_of("/srv/incisive/node", mounts) == ("/dev/sdc1", "/srv/incisive")
    assert mount_of("/srvx", mounts) == ("/dev/sda1", "/")


def test_nvidia_smi_and_architectures() -> None:
    gpus = parse_nvidia_smi("Tesla V100-PCIE-16GB, 16384, 470.256.02, 7.0\nbad line\nTesla K80, 11441, 470.1, [N/A]\n")
    assert gpus[0] == {"name": "Tesla V100-PCIE-16GB", "memory_bytes": 16384 * 1024**2, "driver": "470.256.02",
                       "compute_cap": "7.0"}
    assert gpus[1]["compute_cap"] is None
    assert architecture("7.0").startswith("Volta")
    assert architecture("7.5").startswith("Turing")
    assert architecture("8.9").startswith("Ada")
    assert architecture("9.0").startswith("Hopper")
    assert architecture("12.0").startswith("Blackwell")
    assert architecture("3.7").startswith("Kepler")


def test_nvidia_card_without_driver_fails() -> None:
    facts: dict[str, Any] = {"gpu": {"errors": {"nvml": "NVML unavailable: Driver Not Loaded",
                                                "nvidia-smi": "nvidia-smi not installed"},
                                     "gpus": [], "pci": [{"vendor": "0x10de"}], "nvidia_pci": 1,
                                     "secure_boot": True, "nvidia_module_signed": None}}
    rows = {r.id: r for r in judge_gpu(facts, SPEC, CTX)}
    assert rows["gpu.driver"].verdict is Verdict.FAIL
    assert "Driver Not Loaded" in rows["gpu.driver"].measured
    assert rows["gpu.secure-boot"].verdict is Verdict.UNKNOWN


def test_os_release_quoting() -> None:
    assert parse_os_release('NAME="Ubuntu"\nVERSION_ID="22.04"\n# c\nID=ubuntu\nBAD LINE\n') == {
        "NAME": "Ubuntu", "VERSION_ID": "22.04", "ID": "ubuntu"}


def test_ip_addresses_public_dynamic_and_vpn() -> None:
    links = [{"ifname": "eth0", "flags": ["UP"], "link_type": "ether", "addr_info": [
        {"family": "inet", "local": "145.1.2.3", "scope": "global", "dynamic": True},
        {"family": "inet6", "local": "fe80::1", "scope": "link"}]},
             {"ifname": "tun0", "flags": ["UP"], "link_type": "none", "addr_info": []},
             {"ifname": "wg1", "flags": [], "link_type": "none", "addr_info": []}]
    assert addresses(json.dumps(links)) == {"public_static": [], "public_dynamic": ["145.1.2.3 (eth0)"],
                                            "vpn": ["tun0"]}


def test_firewalls() -> None:
    assert parse_ufw("Status: inactive\n") is None
    ufw = parse_ufw("Status: active\nDefault: deny (incoming), deny (outgoing), disabled (routed)\n\n"
                    "To    Action      From\n--    ------      ----\nOpenSSH    ALLOW IN    Anywhere\n"
                    "53/udp    ALLOW OUT    Anywhere\n")
    assert ufw == {"tool": "ufw", "active": True, "allows_ssh": True, "allows_dns": True}
    empty = parse_nft('{"nftables": [{"metainfo": {"version": "1.0.6"}}]}')
    assert empty["active"] is False
    ranged = parse_nft(json.dumps({"nftables": [
        {"chain": {"family": "ip", "table": "f", "name": "in", "hook": "input", "policy": "drop"}},
        {"chain": {"family": "ip", "table": "f", "name": "out", "hook": "output", "policy": "drop"}},
        {"rule": {"family": "ip", "table": "f", "chain": "in", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": {"range": [20, 25]}}}, {"accept": None}]}},
        {"rule": {"family": "ip", "table": "f", "chain": "out", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}},
            {"drop": None}]}}]}))
    assert ranged == {"tool": "nftables", "active": True, "allows_ssh": True, "allows_dns": False}
    ipt = parse_iptables_save("*filter\n:INPUT DROP [0:0]\n:OUTPUT DROP [0:0]\n"
                              "-A INPUT -p tcp -m multiport --dports 443,22 -j ACCEPT\n"
                              "-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT\n")
    assert ipt == {"tool": "iptables", "active": True, "allows_ssh": True, "allows_dns": True}
    open_ipt = parse_iptables_save("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    assert open_ipt["active"] is False


def test_sshd_and_pwquality_parsing() -> None:
    assert parse_sshd("PermitRootLogin yes # comment\npermitrootlogin no\nMaxAuthTries 2\n") == {
        "permitrootlogin": "yes", "maxauthtries": "2"}
    assert parse_pwquality("minlen = 12\ndcredit = -1\nucredit = -1\nocredit = -1\n") == {
        "minlen": 12, "dcredit": -1, "ucredit": -1, "ocredit": -1, "classes": 3}


@pytest.mark.parametrize(("mdstat", "verdict"), [
    ("md0 : active raid1 sdb1[1] sda1[0]\n      100 blocks [2/2] [UU]\n", Verdict.PASS),
    ("md0 : active raid1 sdb1[1](F) sda1[0]\n      100 blocks [2/1] [U_]\n", Verdict.FAIL),
    ("md0 : active raid1 sdb1[2] sda1[0]\n      100 blocks [2/1] [U_]\n      [==>....]  recovery = 12.6%\n",
     Verdict.FAIL),
    ("md0 : active raid1 sdb1[1] sda1[0]\n      100 blocks [2/2] [UU]\n      [=>...]  resync = 5.0%\n",
     Verdict.WARN),
    ("md127 : active (auto-read-only) raid5 sdc[2] sdb[1] sda[0]\n      100 blocks level 5 [3/3] [UUU]\n",
     Verdict.PASS),
])
def test_mdstat_states(mdstat: str, verdict: Verdict) -> None:
    arrays = parse_mdstat("Personalities : [raid1]\n" + mdstat + "\nunused devices: <none>\n")
    for array in arrays:
        array["mdadm_state"] = None
    facts: dict[str, Any] = {"redundancy": {"errors": {}, "md": arrays, "zfs": None, "backup_age_days": None}}
    raid = judge_redundancy(facts, SPEC, CTX)[0]
    assert raid.verdict is verdict


def test_degraded_zfs_pool_fails() -> None:
    zfs = {"healthy": False, "pools": True, "summary": "  pool: tank"}
    facts: dict[str, Any] = {"redundancy": {"errors": {}, "md": [], "zfs": zfs, "backup_age_days": 1.0}}
    rows = judge_redundancy(facts, SPEC, CTX)
    assert [r.verdict for r in rows] == [Verdict.FAIL, Verdict.PASS]


def test_command_result_reasons() -> None:
    assert CommandResult("ufw-status", None, error="ufw not installed").missing
    denied = CommandResult("ufw-status", 1, "", "ERROR: You need to be root to run this script")
    assert denied.reason.startswith("ufw needs root")
    assert CommandResult("lsblk", 2, "", "lsblk: unknown column").reason == "lsblk exited 2: lsblk: unknown column"
    assert command_key("mdadm-detail", "/dev/md0") == "mdadm-detail__md0"


def test_rows_and_exit_codes() -> None:
    with pytest.raises(ValueError, match="needs a fix"):
        Row("cpu.cores", "cpu", "r", "m", Verdict.WARN)

    def mk(v: Verdict) -> Row:
        return Row("cpu.x", "cpu", "r", "m", v, None if v is Verdict.PASS else "fix")

    assert exit_code([mk(Verdict.PASS), mk(Verdict.MANUAL)]) == 0
    assert exit_code([mk(Verdict.PASS), mk(Verdict.UNKNOWN)]) == 1
    assert exit_code([mk(Verdict.WARN)]) == 1
    assert exit_code([mk(Verdict.WARN), mk(Verdict.FAIL)]) == 2
    assert exit_code([]) == 0

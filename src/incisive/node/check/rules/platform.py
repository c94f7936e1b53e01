"""Rules for the OS, network, access, runtime, redundancy & backup, and the manual checklist."""

from __future__ import annotations

from datetime import date

from incisive.node.check.model import Facts, Row, Verdict
from incisive.node.check.profiles import CheckContext, Profile
from incisive.node.check.rules.common import is_container, row, unknown, virt_of, why

# End of (standard or LTS) security support, by distribution and major release.
SUPPORT_ENDS: dict[str, dict[str, date]] = {
    "ubuntu": {"20.04": date(2025, 5, 31), "22.04": date(2027, 6, 30), "24.04": date(2029, 5, 31),
               "26.04": date(2031, 5, 31)},
    "debian": {"11": date(2026, 8, 31), "12": date(2028, 6, 30), "13": date(2030, 6, 30)},
    "rhel": {"8": date(2029, 5, 31), "9": date(2032, 5, 31), "10": date(2035, 5, 31)},
    "sles": {"15": date(2031, 7, 31)},
}
FAMILY = {"rocky": "rhel", "almalinux": "rhel", "ol": "rhel", "centos": "rhel", "rhel": "rhel",
          "ubuntu": "ubuntu", "debian": "debian", "sles": "sles", "opensuse-leap": "sles"}


def judge_os(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    osf = facts.get("os") or {}
    rows: list[Row] = []
    plat = str(osf.get("platform") or "unknown")
    if plat == "Linux":
        rows.append(row("os.family", "Linux", "Linux", Verdict.PASS))
    else:
        rows.append(row("os.family", "Linux", plat, Verdict.FAIL,
                        "install a supported Linux distribution (Ubuntu LTS, Debian, RHEL/Rocky/Alma)"))
    rows.append(_distribution(osf, ctx))
    req_virt = "bare metal or a VM with dedicated resources (same requirements apply)"
    virt = virt_of(facts)
    if virt is None:
        rows.append(unknown("os.virtualisation", req_virt, why(osf, "virt"), "install systemd (systemd-detect-virt)"
                            " or confirm by hand"))
    elif virt == "none":
        rows.append(row("os.virtualisation", req_virt, "bare metal", Verdict.PASS))
    elif virt == "wsl":
        rows.append(row("os.virtualisation", req_virt, "Windows Subsystem for Linux", Verdict.FAIL,
                        "run the node on Linux directly or in a full VM, not WSL"))
    elif is_container(facts):
        rows.append(row("os.virtualisation", req_virt, f"container ({virt}): hardware rows describe the host",
                        Verdict.WARN, "run 'incisive node check' on the host, not inside a container"))
    else:
        rows.append(row("os.virtualisation", req_virt, f"virtual machine ({virt}): the same requirements apply to "
                        "the VM's allocation", Verdict.PASS))
    return rows


def _distribution(osf: Facts, ctx: CheckContext) -> Row:
    req = "mainstream distribution, supported release"
    rel: dict[str, str] | None = osf.get("os_release")
    if not rel:
        if osf.get("platform") != "Linux":
            return row("os.distribution", req, f"not Linux ({osf.get('platform')})", Verdict.FAIL,
                       "install Ubuntu LTS, Debian stable or RHEL/Rocky/Alma")
        return unknown("os.distribution", req, why(osf, "os_release"), "check /etc/os-release")
    name = rel.get("PRETTY_NAME") or f"{rel.get('NAME', '?')} {rel.get('VERSION_ID', '')}"
    ids = [rel.get("ID", ""), *rel.get("ID_LIKE", "").split()]
    family = next((FAMILY[i] for i in ids if i in FAMILY), None)
    if family is None:
        return row("os.distribution", req, name, Verdict.WARN,
                   "use a mainstream distribution (Ubuntu LTS, Debian stable, RHEL/Rocky/Alma)")
    version = rel.get("VERSION_ID", "")
    ends = SUPPORT_ENDS[family]
    key = version if version in ends else version.split(".", 1)[0]
    if key not in ends:
        return row("os.distribution", req, f"{name} (release not in the support table)", Verdict.WARN,
                   "use an LTS/stable release listed in docs/readiness.md")
    end = ends[key]
    if ctx.today > end:
        return row("os.distribution", req, f"{name}: support ended {end.isoformat()}", Verdict.FAIL,
                   "upgrade to a supported release")
    return row("os.distribution", req, f"{name} (supported until {end.isoformat()})", Verdict.PASS)


def judge_network(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    net = facts.get("network") or {}
    rows: list[Row] = []
    req_link = "wired link (not wireless) ≥ 100 Mbps"
    links: list[Facts] | None = net.get("links")
    wired = [lk for lk in links or [] if not lk["wireless"] and lk["operstate"] == "up"]
    wireless = [lk for lk in links or [] if lk["wireless"] and lk["operstate"] == "up"]
    fast = [lk for lk in wired if (lk.get("speed_mbps") or 0) >= 100]
    if links is None or (not links and is_container(facts)):
        rows.append(unknown("network.link", req_link, why(net, "links") if links is None else
                            "no physical interface visible (container)", "run the check on the host"))
    elif fast:
        rows.append(row("network.link", req_link, ", ".join(f"{lk['name']} {lk['speed_mbps']} Mbps" for lk in fast),
                        Verdict.PASS))
    elif wired and all(lk.get("speed_mbps") is None for lk in wired):
        rows.append(unknown("network.link", req_link, f"{wired[0]['name']} up, speed not reported",
                            "check the link speed on the switch or with ethtool"))
    elif wired:
        rows.append(row("network.link", req_link, ", ".join(f"{lk['name']} {lk['speed_mbps']} Mbps" for lk in wired),
                        Verdict.FAIL, "use a cable/switch port of ≥ 100 Mbps (1 Gbps recommended)"))
    else:
        measured = f"wireless only ({', '.join(lk['name'] for lk in wireless)})" if wireless else "no link up"
        rows.append(row("network.link", req_link, measured, Verdict.FAIL, "connect the node by Ethernet cable"))
    rows.append(_public_ip(net, p))
    dns = net.get("dns") or {}
    req_dns = "DNS resolution works (53/UDP)"
    if dns.get("ok"):
        rows.append(row("network.dns", req_dns, f"{dns['name']} → {dns['detail']}", Verdict.PASS))
    else:
        rows.append(row("network.dns", req_dns, f"{dns.get('name')}: {dns.get('detail')}", Verdict.FAIL,
                        "configure a reachable DNS resolver and allow 53/UDP outbound"))
    plat = net.get("platform")
    req_url = "platform URL reachable (HTTPS, outbound)"
    if plat is None:
        rows.append(row("network.platform", req_url, "no platform URL configured", Verdict.MANUAL,
                        "re-run with --platform-url https://… once the platform address is known"))
    elif plat["ok"]:
        rows.append(row("network.platform", req_url, f"{plat['url']}: {plat['detail']}", Verdict.PASS))
    else:
        rows.append(row("network.platform", req_url, f"{plat['url']}: {plat['detail']}", Verdict.FAIL,
                        "allow outbound HTTPS to the platform (proxy/firewall) and check the URL"))
    if "network.firewall" not in p.skip:
        rows.append(_firewall(net))
    return rows


def _public_ip(net: Facts, p: Profile) -> Row:
    req = "public static IP or a VPN interface"
    addrs: Facts | None = net.get("addresses")
    if addrs is None:
        return unknown("network.public-ip", req, why(net, "addresses"), "install iproute2 ('ip')")
    found = [*addrs["public_static"], *(f"VPN {v}" for v in addrs["vpn"])]
    if found:
        return row("network.public-ip", req, ", ".join(found), Verdict.PASS)
    dynamic = f" (dynamic: {', '.join(addrs['public_dynamic'])})" if addrs["public_dynamic"] else ""
    return row("network.public-ip", req, f"private addresses only{dynamic}", p.no_public_ip_or_vpn,
               "ask IT for a static public IP or a site-to-site VPN (the agent itself only dials out)")


def _firewall(net: Facts) -> Row:
    req = "firewall (if active) allows 22/TCP in and 53/UDP out"
    fw: Facts = net.get("firewall") or {}
    if fw.get("tool") is None:
        return unknown("network.firewall", req, "; ".join(fw.get("reasons") or ["no firewall tool answered"]),
                       "run 'sudo incisive node check' so the ruleset can be read")
    if not fw.get("active"):
        return row("network.firewall", req, f"{fw['tool']}: no filtering rules active", Verdict.PASS)
    blocked = [what for what, ok in (("22/TCP in", fw.get("allows_ssh")), ("53/UDP out", fw.get("allows_dns")))
               if not ok]
    if not blocked:
        return row("network.firewall", req, f"{fw['tool']}: active, 22/TCP and 53/UDP allowed", Verdict.PASS)
    return row("network.firewall", req, f"{fw['tool']}: active, blocks {', '.join(blocked)}", Verdict.FAIL,
               "e.g. 'ufw allow 22/tcp' and 'ufw allow out 53/udp' (or the nft/iptables equivalent)")

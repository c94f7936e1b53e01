"""Network: physical links (/sys/class/net), addresses (``ip -j addr``), DNS, platform URL, firewall."""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlparse

from incisive.node.check.collectors.firewall import collect_firewall
from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System

VPN_PREFIXES = ("tun", "tap", "wg", "ppp", "tailscale", "zt", "ipsec", "vti", "nordlynx", "utun")
NET = "/sys/class/net"


def interfaces(system: System) -> list[Facts] | None:
    names = system.listdir(NET)
    if names is None:
        return None
    found: list[Facts] = []
    for name in names:
        if name == "lo" or not system.exists(f"{NET}/{name}/device"):
            continue  # virtual: bridges, veth, docker0, tunnels
        uevent = system.read(f"{NET}/{name}/uevent") or ""
        speed_raw = (system.read(f"{NET}/{name}/speed") or "").strip()
        speed = int(speed_raw) if speed_raw.lstrip("-").isdigit() else None
        found.append({
            "name": name,
            "wireless": system.exists(f"{NET}/{name}/wireless") or "DEVTYPE=wlan" in uevent,
            "operstate": (system.read(f"{NET}/{name}/operstate") or "unknown").strip(),
            "speed_mbps": speed if speed is not None and speed > 0 else None,
            "type": (system.read(f"{NET}/{name}/type") or "").strip(),
        })
    return found


def addresses(text: str) -> Facts:
    links = json.loads(text)
    public_static: list[str] = []
    public_dynamic: list[str] = []
    vpn: list[str] = []
    for link in links:
        name = str(link.get("ifname", ""))
        up = "UP" in link.get("flags", [])
        if up and (name.startswith(VPN_PREFIXES) or link.get("link_type") == "none"):
            vpn.append(name)
        for addr in link.get("addr_info", []):
            try:
                ip = ipaddress.ip_address(addr.get("local", ""))
            except ValueError:
                continue
            if ip.is_global and addr.get("scope") == "global":
                (public_dynamic if addr.get("dynamic") else public_static).append(f"{ip} ({name})")
    return {"public_static": public_static, "public_dynamic": public_dynamic, "vpn": vpn}


def collect(system: System, ctx: CheckContext) -> Facts:
    facts: Facts = {"errors": {}}
    facts["links"] = interfaces(system)
    if facts["links"] is None:
        facts["errors"]["links"] = f"{NET} not readable"
    ip = system.run("ip-addr")
    facts["addresses"] = None
    if ip.ok:
        try:
            facts["addresses"] = addresses(ip.stdout)
        except (ValueError, AttributeError, TypeError) as exc:
            facts["errors"]["addresses"] = f"unreadable ip -j output: {exc}"
    else:
        facts["errors"]["addresses"] = ip.reason
    dns_name = ctx.dns_name
    if ctx.platform_url:
        dns_name = urlparse(ctx.platform_url).hostname or dns_name
    probe = system.resolve(dns_name)
    facts["dns"] = {"name": dns_name, "ok": probe.ok, "detail": probe.detail}
    if ctx.platform_url:
        reach = system.http_get(ctx.platform_url)
        facts["platform"] = {"url": ctx.platform_url, "ok": reach.ok, "detail": reach.detail}
    else:
        facts["platform"] = None
    facts["firewall"] = collect_firewall(system)
    return facts

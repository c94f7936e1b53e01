"""Firewall parsers (ufw, nftables JSON, iptables-save): is a firewall active, and are 22/TCP in and
53/UDP out allowed? Simplified on purpose: an ACCEPT rule for the port anywhere in the table counts."""

from __future__ import annotations

import json
import re
from typing import Any

from incisive.node.check.model import Facts
from incisive.node.check.system import System


def parse_ufw(text: str) -> Facts | None:
    """None when ufw is installed but inactive (then the kernel ruleset decides)."""
    if "Status: active" not in text:
        return None
    default_in = "deny (incoming)" not in text and "reject (incoming)" not in text
    default_out = "deny (outgoing)" not in text and "reject (outgoing)" not in text
    ssh, dns = default_in, default_out
    in_rules = False
    for line in text.splitlines():
        if line.startswith("--"):
            in_rules = True
            continue
        if not in_rules or not line.strip():
            continue
        cols = re.split(r"\s{2,}", line.strip())
        if len(cols) < 2:
            continue
        target, action = cols[0].replace(" (v6)", ""), cols[1]
        if not action.startswith("ALLOW"):
            continue
        outgoing = action.endswith("OUT")
        if not outgoing and target in ("22", "22/tcp", "OpenSSH", "ssh"):
            ssh = True
        if outgoing and target in ("53", "53/udp", "DNS", "domain"):
            dns = True
    return {"tool": "ufw", "active": True, "allows_ssh": ssh, "allows_dns": dns}


def _port_matches(right: Any, port: int) -> bool:
    if isinstance(right, int):
        return right == port
    if isinstance(right, dict):
        if "set" in right:
            return any(_port_matches(item, port) for item in right["set"])
        if "range" in right:
            low, high = right["range"]
            return isinstance(low, int) and isinstance(high, int) and low <= port <= high
    if isinstance(right, list):
        return any(_port_matches(item, port) for item in right)
    return False


def _nft_accepts(rule: dict[str, Any], proto: str, port: int) -> bool:
    exprs = [e for e in rule.get("expr", []) if isinstance(e, dict)]
    if not any("accept" in e for e in exprs):
        return False
    for expr in exprs:
        match = expr.get("match")
        if not isinstance(match, dict):
            continue
        left = match.get("left")
        payload = left.get("payload") if isinstance(left, dict) else None
        if isinstance(payload, dict) and payload.get("protocol") == proto and payload.get("field") == "dport":
            return _port_matches(match.get("right"), port)
    return False


def parse_nft(text: str) -> Facts:
    items = json.loads(text).get("nftables", [])
    chains = [i["chain"] for i in items if "chain" in i]
    rules = [i["rule"] for i in items if "rule" in i]
    dropping = [c for c in chains if c.get("hook") in ("input", "output") and c.get("policy") == "drop"]
    rejects = any(any(k in e for e in r.get("expr", []) for k in ("drop", "reject")) for r in rules)
    if not dropping and not rejects:
        return {"tool": "nftables", "active": False, "allows_ssh": True, "allows_dns": True}

    def allowed(hook: str, proto: str, port: int) -> bool:
        base = [c for c in chains if c.get("hook") == hook]
        if all(c.get("policy", "accept") == "accept" for c in base):
            return True
        tables = {(c.get("family"), c.get("table")) for c in base if c.get("policy") == "drop"}
        return all(
            any(_nft_accepts(r, proto, port) for r in rules if (r.get("family"), r.get("table")) == t)
            for t in tables
        )

    return {"tool": "nftables", "active": True, "allows_ssh": allowed("input", "tcp", 22),
            "allows_dns": allowed("output", "udp", 53)}


def parse_iptables_save(text: str) -> Facts:
    policies: dict[str, str] = {}
    accepts: dict[str, list[str]] = {"INPUT": [], "OUTPUT": []}
    in_filter = False
    rejects = False
    for line in text.splitlines():
        if line.startswith("*"):
            in_filter = line.strip() == "*filter"
        elif in_filter and line.startswith(":"):
            name, policy = line[1:].split()[:2]
            policies[name] = policy
        elif in_filter and line.startswith("-A "):
            rejects = rejects or bool(re.search(r"-j (DROP|REJECT)", line))
            if "-j ACCEPT" in line:
                accepts.setdefault(line.split()[1], []).append(line)
    active = rejects or any(p == "DROP" for p in policies.values())

    def allowed(chain: str, proto: str, port: int) -> bool:
        if policies.get(chain, "ACCEPT") == "ACCEPT":
            return True
        pattern = re.compile(rf"-p {proto}\b.*--dports? (\S*,)?{port}(,\S*)?\b")
        return any(pattern.search(rule) for rules in accepts.values() for rule in rules)

    return {"tool": "iptables", "active": active, "allows_ssh": allowed("INPUT", "tcp", 22),
            "allows_dns": allowed("OUTPUT", "udp", 53)}


def collect_firewall(system: System) -> Facts:
    """The first firewall front-end that answers; ``tool`` None with ``reasons`` when none could be read."""
    reasons: list[str] = []
    ufw = system.run("ufw-status")
    if ufw.ok:
        parsed = parse_ufw(ufw.stdout)
        if parsed is not None:
            return parsed
    elif ufw.error is None:
        reasons.append(ufw.reason)
    for name, parser in (("nft-ruleset", parse_nft), ("iptables-save", parse_iptables_save)):
        result = system.run(name)
        if result.ok:
            try:
                return parser(result.stdout)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                reasons.append(f"{name}: unreadable output ({exc})")
        else:
            reasons.append(result.reason)
    return {"tool": None, "active": None, "allows_ssh": None, "allows_dns": None, "reasons": reasons}

"""Access: openssh-server installed and running, sshd settings, integration user, password policy, and the
permission bits of the node directory and what it holds private (keys, catalogue, logs, audit, state)."""

from __future__ import annotations

import re

from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System

SSHD_KEYS = ("passwordauthentication", "permitrootlogin", "maxauthtries", "pubkeyauthentication")
SSHD_DEFAULTS = {"passwordauthentication": "yes", "permitrootlogin": "prohibit-password", "maxauthtries": "6",
                 "pubkeyauthentication": "yes"}


def parse_sshd(text: str) -> dict[str, str]:
    """``sshd -T`` output or an sshd_config file: first value of each key wins (as sshd reads it)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.lower().startswith("match "):
            break  # conditional blocks do not change the global settings
        key, _, value = line.partition(" ")
        key = key.lower()
        if key in SSHD_KEYS and key not in values:
            values[key] = value.strip().lower()
    return values


def parse_pwquality(text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*(minlen|minclass|dcredit|ucredit|lcredit|ocredit)\s*=\s*(-?\d+)", line)
        if match:
            values[match.group(1)] = int(match.group(2))
    # negative credits are mandatory classes: count them when minclass is lower
    forced = sum(1 for k in ("dcredit", "ucredit", "lcredit", "ocredit") if values.get(k, 0) < 0)
    values["classes"] = max(values.get("minclass", 0), forced)
    return values


# below the node directory: what must be private to the service account (directories 0700, files 0600)
PRIVATE_PATHS = ("secrets", "secrets/pseudonym.key", "secrets/agent.key", "catalogue.db", "catalogue.db-wal",
                 "catalogue.db-shm", "logs", "logs/incisive.log", "audit", "audit/audit.jsonl", "audit/head.json",
                 "agent", "agent/agent.toml", "run", "tmp", "store", "quarantine", "incisive.toml", "policy.toml")


def collect_modes(system: System, store: str) -> dict[str, int] | None:
    """``{"." (the node directory) or a relative path: mode}`` of what exists; None without a node directory."""
    base = store.rstrip("/") or "/"
    top = system.mode(base)
    if top is None:
        return None
    modes = {".": top}
    for rel in PRIVATE_PATHS:
        mode = system.mode(f"{base}/{rel}")
        if mode is not None:
            modes[rel] = mode
    return modes


def collect(system: System, ctx: CheckContext) -> Facts:
    facts: Facts = {"errors": {}, "integration_user": ctx.integration_user, "store_path": ctx.store_path}
    facts["modes"] = collect_modes(system, ctx.store_path)
    if facts["modes"] is None:
        facts["errors"]["modes"] = f"no node directory at {ctx.store_path}"
    sshd = system.run("sshd-config")
    facts["sshd_installed"] = not sshd.missing
    settings: dict[str, str] | None = None
    if sshd.ok:
        settings, facts["sshd_source"] = parse_sshd(sshd.stdout), "sshd -T"
    elif not sshd.missing:
        config = system.read("/etc/ssh/sshd_config")
        if config is not None:
            settings, facts["sshd_source"] = parse_sshd(config), "/etc/ssh/sshd_config"
            settings = {**SSHD_DEFAULTS, **settings}
        else:
            facts["errors"]["sshd"] = sshd.reason
    else:
        facts["errors"]["sshd"] = sshd.reason
    facts["sshd"] = settings
    facts["sshd_active"] = None
    for unit in ("ssh", "sshd"):
        state = system.run("systemctl-is-active", unit)
        answer = state.stdout.strip()
        if state.error is None and answer in ("active", "inactive", "failed", "activating"):
            facts["sshd_active"] = answer == "active"
            if answer == "active":
                break
        elif state.error or not answer:
            facts["errors"]["sshd_active"] = state.reason
    user = system.run("getent-passwd", ctx.integration_user)
    if user.ok:
        facts["user_exists"] = bool(user.stdout.strip())
    elif user.rc == 2:
        facts["user_exists"] = False
    else:
        passwd = system.read("/etc/passwd")
        facts["user_exists"] = (
            None if passwd is None else any(line.split(":", 1)[0] == ctx.integration_user
                                            for line in passwd.splitlines())
        )
        if passwd is None:
            facts["errors"]["user_exists"] = user.reason
    pwq = system.read("/etc/security/pwquality.conf")
    facts["pwquality"] = parse_pwquality(pwq) if pwq is not None else None
    login_defs = system.read("/etc/login.defs") or ""
    match = re.search(r"^\s*PASS_MIN_LEN\s+(\d+)", login_defs, re.MULTILINE)
    facts["pass_min_len"] = int(match.group(1)) if match else None
    if pwq is None:
        facts["errors"]["pwquality"] = "/etc/security/pwquality.conf not found (libpam-pwquality not installed?)"
    return facts

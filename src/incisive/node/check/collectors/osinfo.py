"""OS: kernel family, distribution and release from /etc/os-release, virtualisation from systemd-detect-virt."""

from __future__ import annotations

import shlex

from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System


def parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            try:
                parts = shlex.split(value)
            except ValueError:
                parts = [value.strip("\"'")]
            values[key] = parts[0] if parts else ""
    return values


def collect(system: System, ctx: CheckContext) -> Facts:
    facts: Facts = {"errors": {}, "platform": system.platform()}
    text = system.read("/etc/os-release") or system.read("/usr/lib/os-release")
    if text is None:
        facts["os_release"] = None
        facts["errors"]["os_release"] = "/etc/os-release not found"
    else:
        facts["os_release"] = parse_os_release(text)
    virt = system.run("systemd-detect-virt")
    # exit 1 with "none" means bare metal; anything else printed is the hypervisor or container.
    answer = virt.stdout.strip()
    if virt.error is None and answer:
        facts["virt"] = answer
    else:
        facts["virt"] = None
        facts["errors"]["virt"] = virt.reason
    return facts

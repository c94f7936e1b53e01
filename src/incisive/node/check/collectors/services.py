"""Services: the node's systemd units (``incisive node install-services``) installed and enabled."""

from __future__ import annotations

from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System
from incisive.node.services import ENABLED

UNIT_DIR = "/etc/systemd/system"


def collect(system: System, ctx: CheckContext) -> Facts:
    facts: Facts = {"errors": {}, "platform": system.platform(), "units": {}}
    if facts["platform"] != "Linux":
        return facts
    for unit in ENABLED:
        installed = system.exists(f"{UNIT_DIR}/{unit}")
        state: str | None = None
        if installed:  # `systemctl is-enabled` answers from the unit files; no running systemd needed
            result = system.run("systemctl-is-enabled", unit)
            words = result.stdout.strip().split()
            if result.error is None and words:
                state = words[0]  # enabled, disabled, masked, static, …
            else:
                facts["errors"][unit] = result.reason
        facts["units"][unit] = {"installed": installed, "enabled": state}
    return facts

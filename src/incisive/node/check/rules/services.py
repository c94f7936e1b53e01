"""Rule for the node's systemd units (the ``runtime`` area): installed and enabled, so the node's services come
back after a crash or a reboot (docs/deployment.md "Services")."""

from __future__ import annotations

from incisive.node.check.model import Facts, Row, Verdict
from incisive.node.check.profiles import CheckContext, Profile
from incisive.node.check.rules.common import row, unknown

REQ = "node services installed and enabled as systemd units (serve, agent, backup timer)"
FIX = "sudo incisive node install-services (review first with --write-to DIR); see docs/deployment.md"


def judge_services(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    sv = facts.get("services") or {}
    if sv.get("platform") != "Linux":
        return [unknown("runtime.services", REQ, f"not Linux ({sv.get('platform')}): no systemd", FIX)]
    units: dict[str, Facts] = sv.get("units") or {}
    missing = [u for u, f in units.items() if not f["installed"]]
    if units and len(missing) == len(units):
        return [row("runtime.services", REQ, "not installed", Verdict.WARN, FIX)]
    unread = [u for u, f in units.items() if f["installed"] and f["enabled"] is None]
    if unread:
        reason = "; ".join(f"{u}: {sv['errors'].get(u, 'not measured')}" for u in unread)
        return [unknown("runtime.services", REQ, f"installed, state unreadable ({reason})",
                        "check with: systemctl is-enabled " + " ".join(unread))]
    off = [f"{u} {f['enabled']}" for u, f in units.items() if f["installed"] and f["enabled"] != "enabled"]
    if missing or off:
        measured = "; ".join([*(f"{u} not installed" for u in missing), *off])
        return [row("runtime.services", REQ, measured, Verdict.WARN,
                    f"{FIX}; or: sudo systemctl enable " + " ".join(units))]
    return [row("runtime.services", REQ, f"installed and enabled: {', '.join(units)}", Verdict.PASS)]

"""Sandbox: can bundle code be caged here (bubblewrap + user namespaces, a process bound) and does the policy cage it.

Reads through :class:`~incisive.node.check.system.System` like every collector: the ``bwrap-probe`` command
(bubblewrap creating the sandbox's namespaces, uid 65534, ``/bin/true``), the pids cgroup controller, the uid
of this process and ``<store>/policy.toml``'s ``[sandbox] mode``. The job path itself asks
:func:`incisive.federated.sandbox.unavailable`, which also creates a pids cgroup to be sure.
"""

from __future__ import annotations

import tomllib

from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System

PIDS_V1 = "/sys/fs/cgroup/pids/cgroup.procs"
V2_CONTROLLERS = ("/sys/fs/cgroup/cgroup.controllers", "/sys/fs/cgroup/unified/cgroup.controllers")


def collect(system: System, ctx: CheckContext) -> Facts:
    facts: Facts = {"errors": {}, "linux": system.platform() == "Linux", "bwrap_installed": False,
                    "bwrap_ok": False, "pids_cgroup": False, "root": None, "mode": None}
    if not facts["linux"]:
        return facts
    probe = system.run("bwrap-probe")
    facts["bwrap_installed"] = not probe.missing
    facts["bwrap_ok"] = probe.ok
    if not probe.ok:
        facts["errors"]["bwrap"] = probe.reason
    facts["pids_cgroup"] = system.exists(PIDS_V1) or any(
        "pids" in (system.read(p) or "").split() for p in V2_CONTROLLERS)
    status = system.read("/proc/self/status") or ""
    uid = next((line.split()[1] for line in status.splitlines() if line.startswith("Uid:")), None)
    facts["root"] = None if uid is None else uid == "0"
    facts["mode"], reason = _mode(system, ctx.store_path)
    if reason:
        facts["errors"]["mode"] = reason
    return facts


def _mode(system: System, store: str) -> tuple[str | None, str | None]:
    text = system.read(f"{store.rstrip('/')}/policy.toml")
    if text is None:
        return "bwrap", None  # no policy file: the default
    try:
        table = tomllib.loads(text).get("sandbox") or {}
    except tomllib.TOMLDecodeError:
        return None, "policy.toml is not valid TOML"
    mode = table.get("mode", "bwrap") if isinstance(table, dict) else None
    return (str(mode), None) if isinstance(mode, str) else (None, "policy.toml [sandbox] mode is not a string")

"""Runtime: Docker Engine present and its daemon answering (``docker info``)."""

from __future__ import annotations

import json

from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System


def collect(system: System, ctx: CheckContext) -> Facts:
    result = system.run("docker-info")
    facts: Facts = {"errors": {}, "installed": not result.missing, "running": False, "server_version": None}
    if result.missing:
        facts["errors"]["docker"] = result.reason
        return facts
    try:
        info = json.loads(result.stdout.strip().splitlines()[0]) if result.stdout.strip() else {}
    except ValueError:
        info = {}
    server_errors = info.get("ServerErrors") or []
    if info.get("ServerVersion") and not server_errors:
        facts["running"] = True
        facts["server_version"] = info["ServerVersion"]
    else:
        facts["errors"]["docker"] = "; ".join(map(str, server_errors)) or result.reason
    return facts

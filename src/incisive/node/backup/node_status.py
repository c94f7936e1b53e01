"""What the node holds, its backup age and redundancy, with warnings (:mod:`incisive.cli.status` prints it)."""

from __future__ import annotations

from typing import Any

from incisive.node.backup.health import backup_health
from incisive.node.backup.raid import raid_health
from incisive.node.catalogue import queries
from incisive.node.home import Node


def collect(node: Node) -> dict[str, Any]:
    with node.catalogue.session() as s:
        stats = queries.stats(s)
    backup = backup_health(node.home)
    raid = raid_health()
    return {"node_id": node.settings.node_id, "provider": node.settings.provider, "home": str(node.home),
            "catalogue": node.catalogue.dialect,
            "contents": {k: v for k, v in stats.items() if k != "by_modality"},
            "backup": backup, "redundancy": raid, "warnings": [*backup["alerts"], *raid["alerts"]]}

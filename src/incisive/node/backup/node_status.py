"""``incisive node status``: what the node holds, backup age and redundancy, with warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from incisive.common.output import console, human_bytes, print_json, table
from incisive.common.settings import resolve_home
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


def status(
    home: Annotated[Path | None, typer.Option("--home", "-H", help="Node directory")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Node summary: contents, last verified backup age, RAID health; warnings when something needs care."""
    node = Node.open(resolve_home(home))
    data = collect(node)
    if json_out:
        print_json(data)
        return
    contents = data["contents"]
    console.print(f"[bold]{data['node_id']}[/] ({data['provider']}) at {data['home']} — {data['catalogue']} catalogue")
    console.print(table("Contents", ["", "count"],
                        [(k, human_bytes(v) if k == "bytes" else v) for k, v in contents.items()]))
    backup = data["backup"]
    age = backup["verified_age_days"]
    console.print(table("Backups", ["target", "location", "last snapshot", "last verified", "age (days)"],
                        [(r["target"], r["location"], r["last_snapshot"] or "never", r["last_verified"] or "never",
                          "" if r["verified_age_days"] is None else f"{r['verified_age_days']:.1f}")
                         for r in backup["targets"]]))
    console.print(f"last verified backup: {'never' if age is None else f'{age:.1f} days ago'} "
                  f"(policy: every {backup['policy']['every_days']} days)")
    raid = data["redundancy"]
    arrays = [f"{a['name']} {a['health']}" for a in raid["md"]] + [f"{p['pool']} {p['health']}" for p in raid["zfs"]]
    if raid["redundant"]:
        console.print("redundancy: " + (", ".join(arrays) or "all ZFS pools healthy"))
    else:
        console.print("redundancy: no software RAID or ZFS pool found")
    for warning in data["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")

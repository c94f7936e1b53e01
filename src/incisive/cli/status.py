"""``incisive node status``: node summary, backup age and RAID health (:mod:`incisive.node.backup.node_status`)
and the open personal-data breaches with their 72 h deadlines (:mod:`incisive.node.compliance.breach`)."""

from __future__ import annotations

from typing import Any

from incisive.cli.options import HomeOpt, JsonOpt
from incisive.common.output import console, human_bytes, print_json, table
from incisive.common.settings import resolve_home
from incisive.node.backup.node_status import collect
from incisive.node.compliance.breach import open_breaches
from incisive.node.home import Node


def status(
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Node summary: contents, last verified backup age, RAID health, open breaches (72 h deadline, hours left);
    warnings when something needs care."""
    node = Node.open(resolve_home(home))
    data = collect(node)
    data["breaches"] = [{k: b[k] for k in ("id", "discovered_at", "deadline", "hours_left", "notified",
                                           "dpa_notified_at", "overdue")} for b in open_breaches(node)]
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
    if data["breaches"]:
        console.print(table("Open breaches (GDPR Art. 33)", ["id", "discovered", "72 h deadline", "left",
                                                              "authority notified"],
                            [(b["id"], b["discovered_at"], b["deadline"], _left(b), b["dpa_notified_at"] or "no")
                             for b in data["breaches"]]))
    for warning in data["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")


def _left(b: dict[str, Any]) -> str:
    if b["notified"]:
        return "notified"
    if b["overdue"]:
        return f"[bold red]OVERDUE by {-b['hours_left']:.1f} h[/]"
    return f"{b['hours_left']:.1f} h"

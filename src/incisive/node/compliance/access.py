"""The access report (GDPR Art. 30(1)/32, the node specification's data access procedures): who ran what on this
node's data since a date, from the node's hash-chained audit log (:class:`incisive.common.audit_log.NodeAudit`).

Grouped per actor (``local`` for the operator's commands on this machine, ``researcher:<user>`` for jobs the
platform relayed, ``token:<id> (<role>)`` for tenant API calls on a Central Node, ``anonymous`` for refused
authentication, ``platform``, ``sandbox``, ``restore``): each action with how often it ran, its outcomes and how
many distinct targets it touched. Only counts, action names and actor names go into the report: never an entry's
targets or details (which may name a source address, a job's question or a keyed digest), so it holds no PHI.
The chain is verified first and the result is part of the report.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from typing import Any

from incisive.common.audit_log import NodeAudit
from incisive.common.errors import InputError
from incisive.node.home import Node


def parse_since(text: str) -> datetime:
    """``2026-11-01`` (00:00 UTC that day) or an ISO 8601 time; not in the future."""
    text = text.strip()
    try:
        if len(text) == 10:
            since = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        else:
            parsed = datetime.fromisoformat(text)
            since = (parsed.astimezone() if parsed.tzinfo is None else parsed).astimezone(UTC)
    except ValueError:
        raise InputError("--since: not a date (e.g. 2026-11-01) or an ISO 8601 time") from None
    if since > datetime.now(UTC):
        raise InputError("--since is in the future")
    return since


def _time(entry: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(entry.get("ts"))).astimezone(UTC)
    except ValueError:
        return None


def access_report(node: Node, since: datetime) -> dict[str, Any]:
    """Who ran what since ``since``: per actor, per action: count, outcomes, distinct targets, first and last."""
    audit = NodeAudit(node.home)
    verification = audit.verify()
    actions: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    targets: dict[tuple[str, str], set[str]] = defaultdict(set)
    total = 0
    for entry in audit.entries():
        ts = _time(entry)
        if ts is None or ts < since:
            continue
        total += 1
        actor, action = str(entry.get("actor", "")), str(entry.get("action", ""))
        row = actions[actor].setdefault(action, {"count": 0, "outcomes": Counter(), "first": ts, "last": ts})
        row["count"] += 1
        row["outcomes"][str(entry.get("outcome", ""))] += 1
        row["first"], row["last"] = min(row["first"], ts), max(row["last"], ts)
        if entry.get("target"):
            targets[(actor, action)].add(str(entry["target"]))
    actors = []
    for actor in sorted(actions):
        rows = [{"action": action, "count": r["count"], "outcomes": dict(sorted(r["outcomes"].items())),
                 "targets": len(targets[(actor, action)]), "first": r["first"].isoformat(timespec="seconds"),
                 "last": r["last"].isoformat(timespec="seconds")} for action, r in sorted(actions[actor].items())]
        actors.append({"actor": actor, "entries": sum(r["count"] for r in rows),
                       "not_ok": sum(n for r in rows for o, n in r["outcomes"].items() if o not in ("ok", "")),
                       "actions": rows})
    return {"node": node.settings.node_id, "since": since.isoformat(timespec="seconds"),
            "until": datetime.now(UTC).isoformat(timespec="seconds"), "entries": total,
            "chain": {"ok": verification.ok, "entries": verification.entries, "problems": len(verification.problems)},
            "actors": actors}

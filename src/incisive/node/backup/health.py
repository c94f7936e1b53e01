"""Backup state kept on the node (``<node>/backup/state.json``) so status and alerts work while the backup
drive is unplugged: last run and last *verified* snapshot per target. Feeds ``node status``, the readiness
check (``last_verified_backup_age``) and the agent heartbeat (``backup_health``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from incisive.common.fsio import atomic_write_text
from incisive.node.backup import config

STATE_FILE = Path("backup") / "state.json"


def load_state(home: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((home / STATE_FILE).read_text())
        return data
    except (OSError, ValueError):
        return {"targets": {}}


def _save(home: Path, state: dict[str, Any]) -> None:
    path = home / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(state, indent=2) + "\n")


def _now() -> datetime:
    return datetime.now(UTC)


def record_run(home: Path, target: str, snapshot: str, created: str, objects: int, size: int) -> None:
    state = load_state(home)
    entry = state.setdefault("targets", {}).setdefault(target, {})
    entry["last_run"] = {"snapshot": snapshot, "created": created, "objects": objects, "bytes": size,
                         "finished": _now().isoformat()}
    entry.pop("last_error", None)
    _save(home, state)


def record_error(home: Path, target: str, message: str) -> None:
    state = load_state(home)
    state.setdefault("targets", {}).setdefault(target, {})["last_error"] = {"message": message,
                                                                           "time": _now().isoformat()}
    _save(home, state)


def record_verified(home: Path, target: str, snapshot: str, created: str, full: bool) -> None:
    """Remember ``snapshot`` as verified when it is newer than the one already recorded."""
    state = load_state(home)
    entry = state.setdefault("targets", {}).setdefault(target, {})
    previous = entry.get("last_verified")
    if previous and _parse(previous["created"]) > _parse(created):
        return
    entry["last_verified"] = {"snapshot": snapshot, "created": created, "full": full, "at": _now().isoformat()}
    _save(home, state)


def _parse(text: str) -> datetime:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def last_verified_backup_age(home: Path, now: datetime | None = None) -> timedelta | None:
    """Age of the newest verified snapshot on any target; None when there is none."""
    times = [_parse(e["last_verified"]["created"]) for e in load_state(home).get("targets", {}).values()
             if e.get("last_verified")]
    return (now or _now()) - max(times) if times else None


def backup_health(home: Path, now: datetime | None = None) -> dict[str, Any]:
    """Per-target rows and alerts (stale, never verified, failing)."""
    cfg = config.load(home)
    state = load_state(home).get("targets", {})
    now = now or _now()
    limit = cfg.policy.stale_after_days
    alerts: list[str] = []
    rows = []
    if not cfg.targets:
        alerts.append("no backup target configured (incisive backup target add)")
    for target in cfg.targets:
        entry = state.get(target.name, {})
        run, ver = entry.get("last_run"), entry.get("last_verified")
        age = (now - _parse(ver["created"])).total_seconds() / 86400 if ver else None
        rows.append({"target": target.name, "location": target.label,
                     "last_snapshot": run["snapshot"] if run else None,
                     "last_snapshot_time": run["created"] if run else None,
                     "last_verified": ver["snapshot"] if ver else None,
                     "verified_age_days": None if age is None else round(age, 2),
                     "last_error": (entry.get("last_error") or {}).get("message")})
        if entry.get("last_error"):
            alerts.append(f"last backup to {target.name} failed: {entry['last_error']['message']}")
    overall = last_verified_backup_age(home, now)
    if cfg.targets and overall is None:
        alerts.append("no verified backup yet (incisive backup run --verify)")
    elif overall is not None and overall.total_seconds() / 86400 > limit:
        alerts.append(f"newest verified backup is {overall.total_seconds() / 86400:.1f} days old "
                      f"(policy: every {cfg.policy.every_days} days)")
    return {"targets": rows, "policy": {"every_days": cfg.policy.every_days, "stale_after_days": limit},
            "verified_age_days": None if overall is None else round(overall.total_seconds() / 86400, 2),
            "stale": overall is None or overall.total_seconds() / 86400 > limit, "alerts": alerts}

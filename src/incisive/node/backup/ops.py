"""One entry point per command, whatever the target kind (directory replica or restic); records state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from incisive.common.errors import ConfigError, IncisiveError
from incisive.node.backup import health
from incisive.node.backup.config import Target
from incisive.node.backup.manifest import Manifest, Repository
from incisive.node.backup.prune import prune_dir
from incisive.node.backup.replica import RunReport, run_dir
from incisive.node.backup.restic import list_restic, prune_restic, restore_restic, run_restic, verify_restic
from incisive.node.backup.restore import RestoreReport, restore_layout
from incisive.node.backup.verify import VerifyReport, verify_dir
from incisive.node.home import Node

Progress = Callable[[int, int, int, int], None]


def run(node: Node, target: Target, passphrase: str | None = None,
        progress: Progress | None = None) -> tuple[RunReport, Manifest]:
    _check_mounted(node, target)
    try:
        if target.kind == "restic":
            report, manifest = run_restic(node, target, passphrase, progress)
        else:
            report, manifest = run_dir(node, target, passphrase, progress)
    except IncisiveError as exc:
        health.record_error(node.home, target.name, str(exc))
        raise
    except OSError as exc:
        health.record_error(node.home, target.name, f"{type(exc).__name__}: {exc.strerror or exc}")
        raise
    health.record_run(node.home, target.name, report.snapshot, manifest.created, report.objects, report.bytes)
    return report, manifest


def _check_mounted(node: Node, target: Target) -> None:
    """Refuse to start a fresh replica on an empty mount point when earlier runs wrote there (drive unplugged)."""
    if target.kind != "dir":
        return
    ran_before = health.load_state(node.home).get("targets", {}).get(target.name, {}).get("last_run")
    repo = Repository.for_node(Path(target.location), node.settings.node_id)
    if ran_before and not (repo.root / "FORMAT").is_file():
        raise ConfigError(f"no incisive backup at {target.location} although earlier runs wrote there; "
                          "is the drive mounted?")


def due(home: Path, target: Target, every_days: int) -> bool:
    """True when no run is recorded for ``target`` or the last is older than ``every_days``."""
    last = health.load_state(home).get("targets", {}).get(target.name, {}).get("last_run")
    if not last:
        return True
    created = datetime.fromisoformat(last["created"])
    return datetime.now(UTC) - created >= timedelta(days=every_days) - timedelta(hours=1)


def verify(target: Target, node_id: str, snapshot: str | None = None, full: bool = False,
           progress: Progress | None = None, home: Path | None = None) -> VerifyReport:
    if target.kind == "restic":
        report = verify_restic(target, node_id, snapshot, full)
        created = {s["id"]: s["time"] for s in list_restic(target, node_id)}
    else:
        repo = Repository.find(Path(target.location), node_id)
        ids = [repo.resolve(snapshot)] if snapshot else None
        report = verify_dir(repo, target.name, ids, full, progress)
        created = {m.id: m.created for m in repo.manifests() if m.id in report.snapshots}
    if home is not None:
        bad = {s for p in report.problems for s in p.snapshots}
        if not any(p.kind == "repository-damaged" for p in report.problems):
            for sid in report.snapshots:
                if sid not in bad and sid in created:
                    health.record_verified(home, target.name, sid, created[sid], full)
    return report


def list_snapshots(target: Target, node_id: str | None) -> list[dict[str, Any]]:
    if target.kind == "restic":
        return list_restic(target, node_id)
    repo = Repository.find(Path(target.location), node_id)
    rows = []
    for m in repo.manifests():
        verified = repo.verified(m.id)
        rows.append({**m.summary(), "verified": verified["time"] if verified else None,
                     "full_verify": bool(verified and verified.get("full"))})
    return rows


def restore(target: Target, node_id: str | None, ref: str, to: Path, catalogue_url: str = "",
            passphrase: str | None = None, progress: Progress | None = None) -> RestoreReport:
    if target.kind == "restic":
        return restore_restic(target, node_id, ref, to, catalogue_url, passphrase, progress)
    repo = Repository.find(Path(target.location), node_id)
    manifest = repo.load(repo.resolve(ref))
    return restore_layout(manifest, repo.snapshot_dir(manifest.id), lambda _area, d: repo.pool.path(d), to,
                          catalogue_url, passphrase, progress)


def prune(target: Target, node_id: str | None, keep_last: int, keep_monthly: int,
          dry_run: bool = False) -> dict[str, Any]:
    if target.kind == "restic":
        return prune_restic(target, node_id, keep_last, keep_monthly, dry_run)
    return prune_dir(Repository.find(Path(target.location), node_id), keep_last, keep_monthly, dry_run).as_dict()

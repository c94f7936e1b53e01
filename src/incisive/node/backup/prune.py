"""Retention: keep the newest N snapshots and the newest snapshot of each of the last M months (restic's
``--keep-last`` / ``--keep-monthly`` meaning), always keep the newest verified one, then delete only the
objects no remaining snapshot references. Manifests go first, so a crash mid-prune never leaves a snapshot
whose objects were removed.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from incisive.common.errors import InputError
from incisive.common.fsio import fsync_dir
from incisive.common.logging import get_logger
from incisive.node.backup.manifest import MANIFEST, Repository

log = get_logger("backup")


@dataclass
class PruneReport:
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    objects_removed: int = 0
    bytes_freed: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_keep(snapshots: list[tuple[str, datetime]], keep_last: int, keep_monthly: int,
                always: set[str] | None = None) -> set[str]:
    """Ids to keep from (id, time) pairs."""
    if keep_last < 0 or keep_monthly < 0:
        raise InputError("--keep-last and --keep-monthly must not be negative")
    newest_first = sorted(snapshots, key=lambda s: (s[1], s[0]), reverse=True)
    keep = {sid for sid, _ in newest_first[:keep_last]}
    months: list[tuple[int, int]] = []
    for sid, when in newest_first:
        month = (when.year, when.month)
        if month in months:
            continue
        if len(months) >= keep_monthly:
            break
        months.append(month)
        keep.add(sid)
    return keep | (always or set())


def prune_dir(repo: Repository, keep_last: int, keep_monthly: int, dry_run: bool = False) -> PruneReport:
    if keep_last == 0 and keep_monthly == 0:
        raise InputError("refusing to remove every snapshot; keep at least one")
    report = PruneReport(dry_run=dry_run)
    with repo.lock():
        manifests = repo.manifests()
        verified = [m.id for m in manifests if repo.verified(m.id)]
        keep = select_keep([(m.id, m.created_at) for m in manifests], keep_last, keep_monthly,
                           {verified[-1]} if verified else set())
        report.kept = [m.id for m in manifests if m.id in keep]
        report.removed = [m.id for m in manifests if m.id not in keep]
        referenced: set[str] = set()
        for m in manifests:
            if m.id in keep:
                referenced.update(m.object_sizes())
        if not dry_run:
            for sid in report.removed:
                folder = repo.snapshot_dir(sid)
                (folder / MANIFEST).unlink()
                fsync_dir(folder)
                shutil.rmtree(folder)
            repo.clean_incomplete()
        for digest in list(repo.pool.iter_digests()):
            if digest in referenced:
                continue
            report.objects_removed += 1
            report.bytes_freed += repo.pool.size(digest)
            if not dry_run:
                repo.pool.remove(digest)
    log.info("backup prune: kept=%d removed=%d objects_removed=%d dry_run=%s", len(report.kept),
             len(report.removed), report.objects_removed, dry_run)
    return report

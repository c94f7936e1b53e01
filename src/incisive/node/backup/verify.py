"""Verify snapshots on a directory target: every listed object present with its size (``--full``: re-hashed),
every snapshot file (catalogue dump, config, key) with its recorded sha256, and the catalogue dump opens.

Problems are reported precisely: which object or file, which snapshots it breaks, and what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from incisive.common.logging import get_logger
from incisive.node.backup.dump import check_dump
from incisive.node.backup.manifest import Manifest, Repository, file_digest

log = get_logger("backup")
Progress = Callable[[int, int, int, int], None]


@dataclass
class Problem:
    kind: str  # missing-object | truncated-object | corrupt-object | missing-file | truncated-file |
    #            altered-file | catalogue-unreadable | manifest-unreadable
    item: str  # object hash or file path inside the snapshot
    detail: str
    snapshots: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    target: str
    full: bool
    snapshots: list[str] = field(default_factory=list)
    objects_checked: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _check_object(repo: Repository, digest: str, size: int, full: bool) -> Problem | None:
    path = repo.pool.path(digest)
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return Problem("missing-object", digest, "object is missing from the target")
    if actual != size:
        kind = "truncated-object" if actual < size else "corrupt-object"
        return Problem(kind, digest, f"object has {actual} bytes, expected {size}")
    if full and repo.pool.hash_file(digest) != digest:
        return Problem("corrupt-object", digest, "object bytes do not match their sha256 (altered on the target)")
    return None


def _check_files(repo: Repository, manifest: Manifest) -> list[Problem]:
    folder = repo.snapshot_dir(manifest.id)
    problems = []
    for rel, meta in sorted(manifest.files.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(Problem("missing-file", rel, "file is missing from the snapshot"))
            continue
        sha, size = file_digest(path)
        if size < int(meta["size"]):
            problems.append(Problem("truncated-file", rel, f"file has {size} bytes, expected {meta['size']}"))
        elif sha != meta["sha256"]:
            problems.append(Problem("altered-file", rel, "file does not match its recorded sha256"))
        elif rel == manifest.catalogue["file"]:
            why = check_dump(manifest.catalogue["dialect"], path)
            if why:
                problems.append(Problem("catalogue-unreadable", rel, why))
    for p in problems:
        p.snapshots = [manifest.id]
    return problems


def verify_dir(repo: Repository, target_name: str, snapshot_ids: list[str] | None = None, full: bool = False,
               progress: Progress | None = None) -> VerifyReport:
    report = VerifyReport(target_name, full)
    ids = snapshot_ids if snapshot_ids is not None else repo.snapshot_ids()
    manifests: list[Manifest] = []
    for sid in ids:
        try:
            manifests.append(repo.load(sid))
        except (OSError, ValueError, TypeError) as exc:
            report.problems.append(Problem("manifest-unreadable", f"{sid}/manifest.json",
                                           f"manifest cannot be read: {type(exc).__name__}", [sid]))
    report.snapshots = [m.id for m in manifests]
    users: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for m in manifests:
        for digest, size in m.object_sizes().items():
            users.setdefault(digest, []).append(m.id)
            sizes[digest] = size
    total_bytes = sum(sizes.values())
    for i, digest in enumerate(sorted(sizes), 1):
        problem = _check_object(repo, digest, sizes[digest], full)
        if problem:
            problem.snapshots = users[digest]
            report.problems.append(problem)
        report.objects_checked += 1
        report.bytes_checked += sizes[digest]
        if progress and (i % 64 == 0 or i == len(sizes)):
            progress(i, len(sizes), report.bytes_checked, total_bytes)
    for m in manifests:
        report.problems.extend(_check_files(repo, m))
    bad = {s for p in report.problems for s in p.snapshots}
    stamp = datetime.now(UTC).isoformat()
    for m in manifests:
        if m.id not in bad:
            repo.mark_verified(m.id, {"time": stamp, "full": full})
    log.info("backup verify: target=%s snapshots=%d objects=%d problems=%d full=%s", target_name,
             len(manifests), report.objects_checked, len(report.problems), full)
    return report

"""Exact replica to a mounted drive: catalogue dump first, then only the objects the target lacks, then the
manifest — last and atomically. A run killed at any point leaves earlier snapshots untouched; the next run
removes the leftovers and skips every object already copied (content addressing makes that safe).

Objects are copied with ``copyfile`` (in-kernel) by a few threads, renamed into place, and made durable with
one ``syncfs`` of the target before the manifest is written, instead of one fsync per object.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from incisive.common.fsio import atomic_write_bytes
from incisive.common.logging import get_logger
from incisive.node.backup.config import Target
from incisive.node.backup.manifest import Manifest, Repository, new_snapshot_id
from incisive.node.backup.stage import stage
from incisive.node.home import Node
from incisive.node.store import ObjectStore

log = get_logger("backup")
Progress = Callable[[int, int, int, int], None]  # files done, files total, bytes done, bytes total
PAUSE_ENV = "INCISIVE_BACKUP_TEST_PAUSE"  # "N:DIR" — tests only: pause after N copies until DIR/resume exists
_BATCH = 256


@dataclass
class RunReport:
    target: str
    snapshot: str
    objects: int
    bytes: int
    copied: int
    copied_bytes: int
    skipped: int
    missing_in_store: int
    cleaned: int
    seconds: float
    key_included: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _syncfs(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


class _Copier:
    """Copies objects into the pool: in-kernel ``copy_file_range``, renamed into place (no per-file fsync)."""

    def __init__(self, pool: ObjectStore) -> None:
        self.objects = str(pool.objects)
        self.tmp = str(pool.tmp)
        self.pid = os.getpid()
        self.kernel_copy = True

    def make_dirs(self, digests: list[str], workers: int) -> None:
        """Create the shard folders the copies need, first level then second (spread over threads)."""
        for level in ({d[:2] for d in digests}, {f"{d[:2]}/{d[2:4]}" for d in digests}):
            paths = [f"{self.objects}/{rel}" for rel in sorted(level)]
            if workers > 1 and len(paths) > 64:
                with ThreadPoolExecutor(workers) as ex:
                    list(ex.map(_mkdir, paths, chunksize=64))
            else:
                for path in paths:
                    _mkdir(path)

    def copy(self, src: Path, digest: str, size: int) -> None:
        tmp = f"{self.tmp}/{digest}.{self.pid}.part"
        if self.kernel_copy:
            try:
                self._copy_range(str(src), tmp)
            except OSError as exc:  # EXDEV / EOPNOTSUPP / EINVAL on some network or FUSE mounts
                if exc.errno not in (errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                self.kernel_copy = False
        if not self.kernel_copy:
            shutil.copyfile(src, tmp)
        os.replace(tmp, f"{self.objects}/{digest[:2]}/{digest[2:4]}/{digest}")

    @staticmethod
    def _copy_range(src: str, dst: str) -> None:
        fin = os.open(src, os.O_RDONLY)
        try:
            fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                while os.copy_file_range(fin, fout, 1 << 30) > 0:
                    pass
            finally:
                os.close(fout)
        finally:
            os.close(fin)


def _mkdir(path: str) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)


def _pause_hook() -> tuple[int, Path] | None:
    raw = os.environ.get(PAUSE_ENV)
    if not raw:
        return None
    count, _, folder = raw.partition(":")
    return int(count), Path(folder)


def _wait_for_resume(folder: Path) -> None:
    (folder / "paused").touch()
    while not (folder / "resume").exists():
        time.sleep(0.05)


def plan(node: Node, refs: dict[str, set[str]], pool: ObjectStore | None) -> tuple[dict[str, list[list[Any]]], list[
        tuple[Path, str, int]], int]:
    """Manifest entries per area, the copies needed (source, digest, size), and how many sources are missing."""
    stores = {"store": node.store, "quarantine": node.quarantine}
    entries: dict[str, list[list[Any]]] = {}
    todo: list[tuple[Path, str, int]] = []
    seen: set[str] = set()
    missing = 0
    for area, digests in refs.items():
        entries[area] = []
        for digest in sorted(digests):
            src = stores[area].path(digest)
            try:
                size = src.stat().st_size
            except FileNotFoundError:
                missing += 1
                continue
            entries[area].append([digest, size])
            if digest in seen or pool is None:
                continue
            seen.add(digest)
            try:
                if pool.path(digest).stat().st_size == size:
                    continue
            except FileNotFoundError:
                pass
            todo.append((src, digest, size))
    return entries, todo, missing


def run_dir(node: Node, target: Target, passphrase: str | None = None, progress: Progress | None = None,
            workers: int = 4) -> tuple[RunReport, Manifest]:
    started = time.monotonic()
    repo = Repository.for_node(Path(target.location), node.settings.node_id)
    repo.init()
    with repo.lock():
        cleaned = repo.clean_incomplete()
        created = datetime.now(UTC)
        snapshot_id = new_snapshot_id(created)
        folder = repo.snapshot_dir(snapshot_id)
        staged = stage(node, folder, passphrase)
        entries, todo, missing = plan(node, staged.catalogue.refs, repo.pool)
        total_objects = sum(len(v) for v in entries.values())
        total_bytes = sum(s for v in entries.values() for _, s in v)
        copy_bytes = sum(s for _, _, s in todo)
        _copy_all(repo.pool, todo, copy_bytes, progress, workers)
        _syncfs(repo.root)
        manifest = Manifest(
            id=snapshot_id, created=created.isoformat(), node_id=node.settings.node_id,
            provider=node.settings.provider, catalogue=staged.catalogue_entry, objects=entries, files=staged.files,
            key_included=staged.key_included,
            totals={"objects": total_objects, "bytes": total_bytes, "copied": len(todo), "copied_bytes": copy_bytes,
                    "missing_in_store": missing})
        atomic_write_bytes(folder / "manifest.json", manifest.to_json())
    report = RunReport(target.name, snapshot_id, total_objects, total_bytes, len(todo), copy_bytes,
                       total_objects - len(todo), missing, cleaned, round(time.monotonic() - started, 3),
                       staged.key_included)
    log.info("backup run: target=%s snapshot=%s objects=%d copied=%d missing=%d", target.name, snapshot_id,
             total_objects, len(todo), missing)
    return report, manifest


def _copy_all(pool: ObjectStore, todo: list[tuple[Path, str, int]], total_bytes: int, progress: Progress | None,
              workers: int) -> None:
    copier = _Copier(pool)
    done = done_bytes = 0
    hook = _pause_hook()
    if progress:
        progress(0, len(todo), 0, total_bytes)
    copier.make_dirs([digest for _, digest, _ in todo], workers)
    if hook is not None or workers <= 1:
        for src, digest, size in todo:
            if hook is not None and done == hook[0]:
                _wait_for_resume(hook[1])
            copier.copy(src, digest, size)
            done, done_bytes = done + 1, done_bytes + size
            if progress and (done % 32 == 0 or done == len(todo)):
                progress(done, len(todo), done_bytes, total_bytes)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool_exec:
        for start in range(0, len(todo), _BATCH):
            batch = todo[start:start + _BATCH]
            list(pool_exec.map(lambda item: copier.copy(*item), batch))
            done += len(batch)
            done_bytes += sum(s for _, _, s in batch)
            if progress:
                progress(done, len(todo), done_bytes, total_bytes)

"""What a sandboxed job may use: :class:`Limits` (node policy ``[sandbox]``), rlimits and the pids cgroup.

rlimits are set in the forked process before it execs bubblewrap (so bwrap and everything under it inherit
them): address space, CPU seconds, file size, open files and, when not root, processes. The kernel does not
enforce ``RLIMIT_NPROC`` for uid 0 (not even inside a user namespace, whose uid maps back to root), so the
number of processes (threads included) is bounded by a per-job **pids cgroup** (v2 when the node's own cgroup
is delegated, else v1 ``/sys/fs/cgroup/pids``); the process joins it before exec. When neither a cgroup nor
``RLIMIT_NPROC`` can bound processes, the sandbox does not start (fail closed).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

MB = 1 << 20
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PREFIX = "incisive-sandbox-"
STALE_SECONDS = 600  # an empty job group this old belongs to a runtime that died without close()


@dataclass(frozen=True)
class Limits:
    """Per-job limits (defaults are the node policy's defaults)."""

    address_space_mb: int = 8192
    cpu_seconds: int = 3600
    processes: int = 64
    file_size_mb: int = 2048
    open_files: int = 512
    wall_seconds: int = 3600
    call_seconds: int = 1800
    max_output_mb: int = 512
    gpu: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "gpu" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"sandbox limit {f.name} must be a positive integer")

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Limits:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def rlimits(self, as_root: bool) -> list[tuple[int, int]]:
        """(resource, value) pairs; RLIMIT_AS is left off for GPU jobs (CUDA reserves far more address space
        than it uses) and RLIMIT_NPROC for root (not enforced: the pids cgroup bounds processes)."""
        out = [(resource.RLIMIT_CPU, self.cpu_seconds), (resource.RLIMIT_FSIZE, self.file_size_mb * MB),
               (resource.RLIMIT_NOFILE, self.open_files), (resource.RLIMIT_CORE, 0)]
        if not self.gpu:
            out.append((resource.RLIMIT_AS, self.address_space_mb * MB))
        if not as_root:
            out.append((resource.RLIMIT_NPROC, self.processes))
        return out


def apply_rlimits(pairs: list[tuple[int, int]]) -> None:
    """In the forked child, before exec. CPU gets a 5 s grace to the hard limit, so SIGXCPU names the cause."""
    for res, value in pairs:
        hard = value + 5 if res == resource.RLIMIT_CPU else value
        _, old_hard = resource.getrlimit(res)
        if old_hard != resource.RLIM_INFINITY:
            hard = min(hard, old_hard)
            value = min(value, hard)
        resource.setrlimit(res, (value, hard))


class PidsCgroup:
    """A per-job pids cgroup: ``pids.max``, joined before exec, every member killed and the group removed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, limit: int) -> PidsCgroup | None:
        """A new group with ``pids.max = limit``, or None when no pids cgroup can be created here."""
        name = CGROUP_PREFIX + uuid.uuid4().hex[:12]
        for parent in _candidate_parents():
            sweep_stale(parent)
            path = parent / name
            try:
                path.mkdir(mode=0o700)
            except OSError:
                continue
            try:
                (path / "pids.max").write_text(str(limit))
                return cls(path)
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
        return None

    def join_fd(self) -> int:
        """An fd on ``cgroup.procs`` opened by the trusted side; the child writes its own pid to it."""
        return os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def pids(self) -> list[int]:
        try:
            text = (self.path / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def peak(self) -> int | None:
        for name in ("pids.peak", "pids.current"):
            with contextlib.suppress(OSError, ValueError):
                return int((self.path / name).read_text())
        return None

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL every member until the group is empty (a fork racing the kill is caught on the next pass)."""
        deadline = time.monotonic() + timeout
        while True:
            members = self.pids()
            if not members or time.monotonic() > deadline:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill_all()
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY while the last members are reaped
                time.sleep(0.05)


def sweep_stale(parent: Path) -> int:
    """Remove empty job groups older than :data:`STALE_SECONDS` (left by a process killed before close())."""
    removed = 0
    now = time.time()
    with contextlib.suppress(OSError):
        for path in parent.glob(CGROUP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > STALE_SECONDS and not (path / "cgroup.procs").read_text().split():
                    path.rmdir()
                    removed += 1
    return removed


def _candidate_parents() -> list[Path]:
    parents: list[Path] = []
    own = _own_v2_cgroup()
    if own is not None:
        parents.append(own)
    if (CGROUP_ROOT / "pids").is_dir():
        parents.append(CGROUP_ROOT / "pids")
    return parents


def _own_v2_cgroup() -> Path | None:
    """This process's cgroup v2 directory when the pids controller is enabled for its children."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            mount = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").exists() else CGROUP_ROOT / "unified"
            path = mount / line[3:].lstrip("/")
            try:
                if "pids" in (path / "cgroup.subtree_control").read_text().split():
                    return path
            except OSError:
                return None
    return None


def process_bound(limits: Limits, cgroup: PidsCgroup | None) -> str | None:
    """None when processes are bounded (cgroup, or RLIMIT_NPROC as non-root), else why they cannot be."""
    if cgroup is not None or os.geteuid() != 0:
        return None
    return "no pids cgroup can be created and RLIMIT_NPROC is not enforced for root"

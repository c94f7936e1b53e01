"""Overlap control: the node's private log of the unit sets behind every number it answered.

Differencing attacks ask two questions whose answers are each safe (≥ k) but whose difference is a handful of
patients ("unknown cancer type: 6"; "... and female: 5"). So for every published number the node records the
set of units (patients, studies or series) behind it, per researcher and project, and withholds a new number
whose unit set differs from a recorded one by 1 to k−1 units (the symmetric difference; asking for exactly the
same set again reveals nothing new and is answered).

Nothing here leaves the node. Units are stored as 64-bit keyed hashes (HMAC-SHA256 under ``secrets/overlap.key``,
created on first use), never as pseudonyms or row ids, in ``<node>/agent/overlap.db`` (SQLite). A new set is
compared only with recorded sets whose size is within k−1 of its own (the difference can be no smaller than the
size gap), found through an index on size.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from incisive.common.crypto import generate_key, read_secret, write_secret

KEY_FILE = Path("secrets") / "overlap.key"
LOG_FILE = Path("agent") / "overlap.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS answered (
    id INTEGER PRIMARY KEY,
    requester TEXT NOT NULL,
    project TEXT NOT NULL,
    size INTEGER NOT NULL,
    digest BLOB NOT NULL,
    members BLOB NOT NULL,
    UNIQUE (requester, project, digest)
);
CREATE INDEX IF NOT EXISTS ix_answered_requester ON answered (requester, size);
CREATE INDEX IF NOT EXISTS ix_answered_project ON answered (project, size);
"""


def node_key(home: Path) -> bytes:
    path = home / KEY_FILE
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process created it first
            write_secret(path, generate_key())
    return read_secret(path)


class HashedSet:
    """A unit set as sorted 64-bit keyed hashes, with its digest (identical sets have identical digests)."""

    __slots__ = ("digest", "members", "size")

    def __init__(self, members: frozenset[int]) -> None:
        self.members = members
        self.size = len(members)
        self.digest = hashlib.sha256(b"".join(m.to_bytes(8, "big") for m in sorted(members))).digest()

    def blob(self) -> bytes:
        return b"".join(m.to_bytes(8, "big") for m in sorted(self.members))


def _members(blob: bytes) -> frozenset[int]:
    return frozenset(int.from_bytes(blob[i:i + 8], "big") for i in range(0, len(blob), 8))


class Hasher:
    def __init__(self, key: bytes, unit: str) -> None:
        self._mac = hmac.new(key, b"overlap|" + unit.encode() + b"|", hashlib.sha256)

    def __call__(self, units: Iterable[object]) -> HashedSet:
        out = set()
        for unit in units:
            mac = self._mac.copy()
            mac.update(str(unit).encode())
            out.add(int.from_bytes(mac.digest()[:8], "big"))
        return HashedSet(frozenset(out))


class OverlapLog:
    """The log of one node; :meth:`session` gives the view of one researcher and project for one job."""

    def __init__(self, home: Path) -> None:
        self.home = home
        path = home / LOG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.key = node_key(home)

    def session(self, requester: str, project: str | None, unit: str, k: int) -> OverlapSession:
        return OverlapSession(self, requester, project or "", Hasher(self.key, unit), k)

    def near(self, requester: str, project: str, low: int, high: int) -> list[tuple[bytes, bytes]]:
        """(digest, members) of the sets answered to this requester, or to anyone in this (named) project,
        whose size is in [low, high]."""
        with self._lock:
            rows = self._db.execute(
                "SELECT digest, members FROM answered WHERE requester = ? AND size BETWEEN ? AND ? "
                "UNION ALL SELECT digest, members FROM answered WHERE project = ? AND project != '' "
                "AND requester != ? AND size BETWEEN ? AND ?",
                (requester, low, high, project, requester, low, high)).fetchall()
        return rows

    def record(self, requester: str, project: str, sets: list[HashedSet]) -> None:
        if not sets:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO answered (requester, project, size, digest, members) VALUES (?, ?, ?, ?, ?)",
                [(requester, project, h.size, h.digest, h.blob()) for h in sets])
            self._db.execute("COMMIT")

    def entries(self, requester: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM answered WHERE requester = ?",
                                        (requester,)).fetchone()[0])

    def close(self) -> None:
        self._db.close()


class OverlapSession:
    """Decides, set by set, what one job may publish; :meth:`commit` records what it published."""

    def __init__(self, log: OverlapLog, requester: str, project: str, hasher: Hasher, k: int) -> None:
        self.log, self.requester, self.project, self.hash, self.k = log, requester, project, hasher, k
        self.accepted: dict[bytes, HashedSet] = {}

    def allows(self, units: Iterable[object]) -> bool:
        """True when this set may be published: it equals an answered set, or differs from every answered set
        (and every set accepted earlier in this job) by 0 or at least k units."""
        h = self.hash(units)
        if h.digest in self.accepted:
            return True
        low, high = max(0, h.size - self.k + 1), h.size + self.k - 1
        previous = self.log.near(self.requester, self.project, low, high)
        if any(digest == h.digest for digest, _ in previous):
            self.accepted[h.digest] = h
            return True
        others = [_members(blob) for _, blob in previous]
        others += [a.members for a in self.accepted.values() if low <= a.size <= high]
        if any(0 < len(h.members ^ other) < self.k for other in others):
            return False
        self.accepted[h.digest] = h
        return True

    def commit(self) -> None:
        self.log.record(self.requester, self.project, list(self.accepted.values()))

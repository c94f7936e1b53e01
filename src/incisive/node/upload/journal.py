"""The uploader's journal: what the Central Node acknowledged, per source file and destination (SQLite).

Rows are keyed by keyed digests (the provider's key) of the destination URL and of the source file's path, never
the path itself (folder names can hold names). A file whose row says it is done, with the size and modification
time it had then, is not read again; anything else (never seen, changed, or sent without an acknowledgement
before a cut) is de-identified and sent again, which stores nothing twice at the other end (same key, same bytes).

Statuses (final for the file as it is, except ``refused``):
* ``sent``: the Central Node stored it; ``duplicate``: it had it already; ``held``: it stored it in its quarantine;
* ``quarantined``: held back here (burned-in text risk, documents that cannot be cleaned), never sent;
* ``rejected``: the de-identifier refused it here (not DICOM, truncated, …), never sent;
* ``refused``: the Central Node refused it (its reason is kept; PHI-free by design at both ends). Sent again by
  the next run, so that a setting fixed at either end (``safe_private_tags``, ``sr_keep_text``) takes effect.

A batch's rows are written in one transaction after its acknowledgement arrived.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DONE = frozenset({"sent", "duplicate", "held", "quarantined", "rejected"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS instance (
    destination TEXT NOT NULL,
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    sop_uid TEXT,
    digest TEXT,
    reason TEXT,
    at TEXT NOT NULL,
    PRIMARY KEY (destination, file)
);
CREATE TABLE IF NOT EXISTS clinical (
    destination TEXT NOT NULL,
    digest TEXT NOT NULL,
    rows INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (destination, digest)
);
"""


@dataclass(frozen=True)
class Entry:
    """One source file's outcome: ``file`` is the keyed digest of its path, ``sop_uid`` the de-identified UID."""

    file: str
    size: int
    mtime_ns: int
    status: str
    sop_uid: str = ""
    digest: str = ""
    reason: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Journal:
    def __init__(self, path: Path, destination: str) -> None:
        """``destination``: a keyed digest of the Central Node URL (a folder sent to two nodes is sent to both)."""
        self.destination = destination
        path.touch(mode=0o600, exist_ok=True)  # keyed digests only, but private like everything in the directory
        self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # a lost last commit only means a resend (a duplicate)
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def done(self) -> dict[str, tuple[int, int]]:
        """Files already done for this destination: digest → (size, mtime_ns) they had."""
        rows = self.db.execute("SELECT file, size, mtime_ns, status FROM instance WHERE destination = ?",
                               (self.destination,))
        return {file: (size, mtime) for file, size, mtime, status in rows if status in DONE}

    def record(self, entries: Iterable[Entry]) -> None:
        at = _now()
        rows = [(self.destination, e.file, e.size, e.mtime_ns, e.status, e.sop_uid or None, e.digest or None,
                 e.reason or None, at) for e in entries]
        if not rows:
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO instance VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) FROM instance WHERE destination = ? GROUP BY status",
                               (self.destination,))
        return {status: n for status, n in rows}

    def clinical_done(self, digest: str) -> bool:
        row = self.db.execute("SELECT 1 FROM clinical WHERE destination = ? AND digest = ?",
                              (self.destination, digest)).fetchone()
        return row is not None

    def record_clinical(self, digest: str, rows: int, stored: int, duplicates: int) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT OR REPLACE INTO clinical VALUES (?, ?, ?, ?, ?, ?)",
                            (self.destination, digest, rows, stored, duplicates, _now()))

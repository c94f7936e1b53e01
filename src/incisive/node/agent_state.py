"""Idempotency store of the agent (``<node>/agent/state.db``, SQLite): a job id is recorded as ``running``
*before* the job runs, so a job is run at most once even across crashes of the agent; its result stays until the
platform acknowledges it, so it is delivered at least once.

WAL with ``synchronous=NORMAL``: a commit survives a crash of the process (the case that matters), a power cut may
lose the last commits; then a read-only aggregate could run a second time, which is harmless. An fsync per state
change would otherwise serialise every agent on the disk (measured: 3.3 ms per fsync on the benchmark machine).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS job (
  id TEXT PRIMARY KEY, type TEXT NOT NULL, state TEXT NOT NULL, result TEXT,
  received_at REAL NOT NULL, acked INTEGER NOT NULL DEFAULT 0
)
"""


class AgentState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()

    def state(self, job_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM job WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def begin(self, job_id: str, job_type: str, now: float) -> bool:
        """Record the job as running; False when it was seen before (then it must not run again)."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO job (id, type, state, received_at) VALUES (?, ?, ?, ?)",
                                   (job_id, job_type, "running", now))
            return cur.rowcount == 1

    def finish(self, job_id: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("UPDATE job SET state = 'done', result = ? WHERE id = ?", (json.dumps(result), job_id))

    def undelivered(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            rows = self._db.execute("SELECT id, result FROM job WHERE state = 'done' AND acked = 0 "
                                    "ORDER BY received_at").fetchall()
        return [(str(i), json.loads(r)) for i, r in rows]

    def ack(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE job SET acked = 1 WHERE id = ?", (job_id,))

    def close(self) -> None:
        self._db.close()

"""The node's audit log: hash-chained JSON lines in ``<node>/audit/audit.jsonl`` with the head in ``head.json``.

Who (requester or local operator), what (job type, policy change, enrolment), when, outcome; never PHI. Written
by the node; read and verified by ``incisive audit`` on either side (the chain itself is :mod:`incisive.common.audit`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from incisive.common.audit import GENESIS, Verification, make_entry, verify_chain
from incisive.common.fsio import atomic_write_text

_lock = threading.Lock()


class NodeAudit:
    def __init__(self, home: Path) -> None:
        self.dir = home / "audit"
        self.path = self.dir / "audit.jsonl"
        self.head_path = self.dir / "head.json"

    def head(self) -> tuple[int, str] | None:
        try:
            data = json.loads(self.head_path.read_text())
            return int(data["seq"]), str(data["hash"])
        except (OSError, ValueError, KeyError):
            return None

    def append(self, actor: str, action: str, target: str = "", node: str = "", outcome: str = "ok",
               details: Mapping[str, Any] | None = None) -> dict[str, Any]:
        with _lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            seq, prev = self.head() or (0, GENESIS)
            entry = make_entry(seq, prev, actor, action, target, node, outcome, details)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            atomic_write_text(self.head_path, json.dumps({"seq": entry["seq"], "hash": entry["hash"]}))
            return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    yield {"seq": f"line {number}", "hash": "unreadable"}

    def verify(self) -> Verification:
        return verify_chain(self.entries(), self.head())

"""Append-only, hash-chained audit entries (platform table and node JSON-lines file share this logic).

Each entry holds ``seq`` (1, 2, …), ``ts``, ``actor``, ``action``, ``target``, ``node``, ``outcome``, ``details``
(a small dict of identifiers and counts: never PHI), ``prev`` (the previous entry's hash, 64 zeros for the
first) and ``hash`` = SHA-256 of the canonical JSON of all other fields. Editing an entry breaks its hash;
removing or reordering entries breaks ``seq``/``prev``; cutting the tail is caught by the separately stored
head (last ``seq`` and ``hash``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
FIELDS = ("seq", "ts", "actor", "action", "target", "node", "outcome", "details", "prev")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def entry_hash(entry: Mapping[str, Any]) -> str:
    body = {k: entry.get(k) for k in FIELDS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def make_entry(prev_seq: int, prev_hash: str, actor: str, action: str, target: str = "", node: str = "",
               outcome: str = "ok", details: Mapping[str, Any] | None = None, ts: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"seq": prev_seq + 1, "ts": ts or now_iso(), "actor": actor, "action": action,
                             "target": target, "node": node, "outcome": outcome, "details": dict(details or {}),
                             "prev": prev_hash}
    entry["hash"] = entry_hash(entry)
    return entry


@dataclass
class Verification:
    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "problems": self.problems}


def verify_chain(entries: Iterable[Mapping[str, Any]], head: tuple[int, str] | None = None,
                 max_problems: int = 50) -> Verification:
    """Check hashes, sequence and links; ``head`` (seq, hash) of the last entry catches a cut tail."""
    problems: list[str] = []
    prev_hash, expected_seq, count = GENESIS, 1, 0
    last: tuple[int, str] = (0, GENESIS)
    for entry in entries:
        count += 1
        seq = entry.get("seq")
        if entry_hash(entry) != entry.get("hash"):
            problems.append(f"entry {seq}: content does not match its hash (edited)")
        if seq != expected_seq:
            problems.append(f"entry {seq}: expected sequence number {expected_seq} (removed or reordered entry)")
        if entry.get("prev") != prev_hash:
            problems.append(f"entry {seq}: link to the previous entry is broken (removed, inserted or reordered)")
        prev_hash = str(entry.get("hash"))
        expected_seq = (seq if isinstance(seq, int) else expected_seq) + 1
        last = (seq if isinstance(seq, int) else -1, prev_hash)
        if len(problems) >= max_problems:
            break
    if head is not None and head != last and len(problems) < max_problems:
        problems.append(f"log ends at entry {last[0]} but the recorded head is entry {head[0]} (entries cut)")
    return Verification(ok=not problems, entries=count, problems=problems)

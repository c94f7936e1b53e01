"""The platform's audit log: hash-chained rows in ``audit_entry`` with the head in ``audit_head``."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incisive.common.audit import GENESIS, Verification, make_entry, verify_chain
from incisive.platform.models import AuditEntry, AuditHead

_lock = threading.Lock()


def append(s: Session, actor: str, action: str, target: str = "", node: str = "", outcome: str = "ok",
           details: Mapping[str, Any] | None = None) -> None:
    """Add an entry in the caller's transaction (the head row is locked on PostgreSQL, a lock in-process)."""
    with _lock:
        head = s.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one_or_none()
        if head is None:
            head = AuditHead(id=1, seq=0, hash=GENESIS)
            s.add(head)
        entry = make_entry(head.seq, head.hash, actor[:80], action[:64], target[:128], node[:63], outcome[:32],
                           details)
        s.add(AuditEntry(**entry))
        head.seq, head.hash = entry["seq"], entry["hash"]
        s.flush()


def entries(s: Session, batch: int = 1000) -> Iterator[dict[str, Any]]:
    last = 0
    while True:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)).all()
        if not rows:
            return
        for row in rows:
            yield row.as_dict()
        last = rows[-1].seq


def verify(s: Session) -> Verification:
    head = s.get(AuditHead, 1)
    return verify_chain(entries(s), None if head is None else (head.seq, head.hash))

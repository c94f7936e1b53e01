"""The platform's audit log: hash-chained rows in ``audit_entry`` with the head in ``audit_head``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from incisive.common.audit import GENESIS, Verification, make_entry, verify_chain
from incisive.platform.models import AuditEntry, AuditHead

_HEAD_INSERT = {  # the head row, made if missing; on SQLite this write takes the database's write lock first
    name: insert(AuditHead.__table__).values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing()  # type: ignore[arg-type]
    for name, insert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
}


def append(s: Session, actor: str, action: str, target: str = "", node: str = "", outcome: str = "ok",
           details: Mapping[str, Any] | None = None) -> None:
    """Add an entry in the caller's transaction; appends are serialised by the database itself until commit.

    The head is read only after this transaction holds the writer's lock: on SQLite the insert-or-ignore of the
    head row is a write, which takes the one write lock (waiting ``busy_timeout``) before the head is read (the
    driver opens the transaction at the first write; a head read before it raced another writer to the same
    ``seq``: issue 16, 3 of 30 concurrent denials answered 500 with no entry). On PostgreSQL the head row is
    locked ``FOR UPDATE``. No in-process lock: it would deadlock against a transaction that appends twice."""
    dialect = s.get_bind().dialect.name
    if dialect in _HEAD_INSERT:
        s.execute(_HEAD_INSERT[dialect])
    head = s.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one_or_none()
    if head is None:  # pragma: no cover - other databases
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

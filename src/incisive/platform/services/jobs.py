"""Jobs for nodes: queued per node, offered by long-poll, re-offered if unanswered, first result wins."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import lambda_stmt, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from incisive.common.protocol import RESULT_STATUSES, JobType
from incisive.common.protocol import Job as AgentJob
from incisive.platform.errors import NotFound
from incisive.platform.models import Job, JobResult
from incisive.platform.services import aware, new_id, utcnow


def create(s: Session, query_id: str | None, kind: JobType | str, payload: dict[str, Any], node_ids: list[str],
           ttl_s: float, handed: set[str] | frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Queue one job per node; those for nodes in ``handed`` (a long-poll of theirs is waiting in this process)
    are recorded as delivered and handed over in memory. Returns each node's job as sent to the agent."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl_s)
    kind = JobType(kind)  # only a type the protocol knows is ever queued
    out: dict[str, dict[str, Any]] = {}
    for node_id in node_ids:
        direct = node_id in handed
        job = Job(id=new_id(), query_id=query_id, node_id=node_id, kind=kind.value, payload=payload,
                  status="delivered" if direct else "pending", created_at=now, expires_at=expires,
                  delivered_at=now if direct else None, deliveries=1 if direct else 0)
        s.add(job)
        out[node_id] = AgentJob(id=job.id, type=kind.value, payload=payload, expires_at=expires.isoformat()).wire()
    return out


def claim(s: Session, node_id: str, redeliver_s: float, limit: int = 20) -> list[dict[str, Any]]:
    """Jobs to hand to a node now: pending ones, and delivered ones unanswered for ``redeliver_s``."""
    now = utcnow()
    stale = now - timedelta(seconds=redeliver_s)
    # lambda_stmt: built and cache-keyed once (this runs on every agent poll); the closure values are bound
    rows = s.scalars(lambda_stmt(
        lambda: select(Job).where(Job.node_id == node_id, Job.expires_at > now,
                                  or_(Job.status == "pending",
                                      (Job.status == "delivered") & (Job.delivered_at < stale)))
        .order_by(Job.created_at).limit(limit)
    )).all()
    out = []
    for job in rows:
        job.status, job.delivered_at, job.deliveries = "delivered", now, job.deliveries + 1
        out.append(AgentJob(id=job.id, type=job.kind, payload=job.payload,
                            expires_at=(aware(job.expires_at) or now).isoformat()).wire())
    return out


_RESULT_INSERT = {  # built once: first result wins, later copies are dropped by the database
    name: insert(JobResult.__table__).on_conflict_do_nothing().returning(JobResult.job_id)  # type: ignore[arg-type]
    for name, insert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
}


def submit(s: Session, node_id: str, job_id: str, body: dict[str, Any]) -> str | None:
    """Store a result (idempotent: later copies are acknowledged and dropped); returns the job's query id."""
    row = s.execute(lambda_stmt(lambda: select(Job.node_id, Job.query_id).where(Job.id == job_id))).first()
    if row is None or row.node_id != node_id:
        raise NotFound("no such job for this node")
    status = body.get("status")
    values = {"job_id": job_id, "node_id": node_id, "status": status if status in RESULT_STATUSES else "error",
              "body": body, "received_at": utcnow()}
    statement = _RESULT_INSERT.get(s.get_bind().dialect.name)
    if statement is None:  # pragma: no cover - other databases
        if s.get(JobResult, job_id) is not None:
            return str(row.query_id) if row.query_id else None
        s.add(JobResult(**values))
        stored = True
    else:
        stored = s.connection().execute(statement, values).first() is not None
    if stored:
        s.execute(lambda_stmt(lambda: update(Job).where(Job.id == job_id).values(status="done")))
    return str(row.query_id) if row.query_id else None


def results(s: Session, query_id: str) -> dict[str, dict[str, Any]]:
    rows = s.execute(select(Job.node_id, JobResult.body).join(JobResult, JobResult.job_id == Job.id)
                     .where(Job.query_id == query_id))
    return {node_id: body for node_id, body in rows}


def expire_unanswered(s: Session, query_id: str) -> None:
    s.execute(update(Job).where(Job.query_id == query_id, Job.status.in_(("pending", "delivered")))
              .values(status="expired"))

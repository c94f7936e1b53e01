"""Jobs for nodes: queued per node, offered by long-poll, re-offered if unanswered, first result wins."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import lambda_stmt, or_, select, update
from sqlalchemy.orm import Session

from incisive.platform.errors import NotFound
from incisive.platform.models import Job, JobResult
from incisive.platform.services import aware, new_id, utcnow

RESULT_STATUSES = ("ok", "refused", "error")


def create(s: Session, query_id: str | None, kind: str, payload: dict[str, Any], node_ids: list[str],
           ttl_s: float) -> dict[str, str]:
    now = utcnow()
    jobs: dict[str, str] = {}
    for node_id in node_ids:
        job = Job(id=new_id(), query_id=query_id, node_id=node_id, kind=kind, payload=payload, status="pending",
                  created_at=now, expires_at=now + timedelta(seconds=ttl_s), deliveries=0)
        s.add(job)
        jobs[node_id] = job.id
    return jobs


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
        out.append({"id": job.id, "type": job.kind, "payload": job.payload,
                    "expires_at": (aware(job.expires_at) or now).isoformat()})
    return out


def submit(s: Session, node_id: str, job_id: str, body: dict[str, Any]) -> str | None:
    """Store a result (idempotent: later copies are acknowledged and dropped); returns the job's query id."""
    job = s.get(Job, job_id)
    if job is None or job.node_id != node_id:
        raise NotFound("no such job for this node")
    if s.get(JobResult, job_id) is None:
        status = body.get("status")
        s.add(JobResult(job_id=job_id, node_id=node_id, status=status if status in RESULT_STATUSES else "error",
                        body=body, received_at=utcnow()))
        job.status = "done"
    return job.query_id


def results(s: Session, query_id: str) -> dict[str, dict[str, Any]]:
    rows = s.execute(select(Job.node_id, JobResult.body).join(JobResult, JobResult.job_id == Job.id)
                     .where(Job.query_id == query_id))
    return {node_id: body for node_id, body in rows}


def expire_unanswered(s: Session, query_id: str) -> None:
    s.execute(update(Job).where(Job.query_id == query_id, Job.status.in_(("pending", "delivered")))
              .values(status="expired"))

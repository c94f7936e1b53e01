"""Federated-learning jobs on the platform: validate and record a researcher's request, then the runner
(:mod:`incisive.platform.fl_runner`) moves it through ``queued → starting → running → completed | failed`` and
mirrors the ServerApp's rounds into the row. Everything here is one short synchronous transaction per call."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incisive.federated.bundle import parse_ref
from incisive.federated.service import STRATEGIES
from incisive.platform.errors import BadRequest, NotFound
from incisive.platform.models import FlJob, ModelBundle
from incisive.platform.services import audit, models, nodes, utcnow
from incisive.platform.settings import PlatformSettings

OPS = ("train", "evaluate")
ACTIVE = ("queued", "starting", "running")
SPEC_KEYS = ("rounds", "strategy", "proximal_mu", "dp_epsilon", "dp_delta", "secagg", "round_timeout", "min_nodes",
             "local_epochs", "seed", "project")


def new_job_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _targets(s: Session, wanted: list[str] | None, offline_s: float) -> dict[str, dict[str, Any]]:
    active = {n.node_id: n for n in nodes.active_nodes(s)}
    if wanted:
        unknown = sorted(set(wanted) - set(active))
        if unknown:
            raise BadRequest(f"unknown or revoked node(s): {', '.join(unknown[:10])[:300]}")
    chosen = list(dict.fromkeys(wanted)) if wanted else sorted(active)
    if not chosen:
        raise BadRequest("no enrolled nodes to train on")
    return {n: {"status": "pending" if nodes.status(active[n], offline_s) == "online" else "offline"}
            for n in chosen}


def create(s: Session, username: str, op: str, model_ref: str, params: dict[str, Any],
           node_ids: list[str] | None, settings: PlatformSettings) -> dict[str, Any]:
    """Record a job (status ``queued``); the caller hands its id to the runner after the commit."""
    if op not in OPS:
        raise BadRequest(f"op must be one of {', '.join(OPS)}")
    try:
        name, version, source = parse_ref(model_ref)
    except Exception:
        raise BadRequest("model must be NAME:VERSION (optionally @JOB)") from None
    if params.get("strategy", "fedavg") not in STRATEGIES:
        raise BadRequest(f"strategy must be one of {', '.join(STRATEGIES)}")
    bundle = models.get(s, name, version)
    if op not in bundle.manifest.get("job_types", []):
        raise BadRequest(f"bundle {name}:{version} does not support {op}")
    if op == "evaluate" and not source:
        raise BadRequest("evaluation needs a trained model: NAME:VERSION@JOB")
    if source:
        trained = models.trained(s, source)
        if trained.bundle_id != bundle.id:
            raise BadRequest(f"job {source} trained another model")
    targets = _targets(s, node_ids, settings.node_offline_s)
    spec = {k: params[k] for k in SPEC_KEYS if params.get(k) is not None}
    spec.update(model=f"{name}:{version}", sha256=bundle.sha256, op=op, nodes=sorted(targets))
    job = FlJob(id=new_job_id(), op=op, bundle_id=bundle.id, source_job=source, requested_by=username, spec=spec,
                status="queued", nodes=targets, server={}, rounds=[], created_at=utcnow())
    s.add(job)
    s.flush()
    audit.append(s, username, f"fl.{op}", target=job.id, details={"model": spec["model"], "sha256": bundle.sha256,
                                                                   "nodes": sorted(targets)})
    return job_dict(job, bundle)


def job_dict(job: FlJob, bundle: ModelBundle | None = None, rounds: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.id, "op": job.op, "model": job.spec.get("model"), "sha256": job.spec.get("sha256"),
        "source_job": job.source_job, "requested_by": job.requested_by, "status": job.status, "spec": job.spec,
        "flower_run_id": job.flower_run_id, "nodes": job.nodes, "server": job.server,
        "provenance": job.provenance, "error": job.error, "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at)}
    if bundle is not None:
        out["bundle"] = {"name": bundle.name, "version": bundle.version, "sha256": bundle.sha256}
    if rounds:
        out["rounds"] = job.rounds
    return out


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def row(s: Session, job_id: str) -> FlJob:
    job = s.get(FlJob, job_id[:32])
    if job is None:
        raise NotFound(f"no FL job {job_id[:32]!r}")
    return job


def get(s: Session, job_id: str) -> dict[str, Any]:
    job = row(s, job_id)
    return job_dict(job, s.get(ModelBundle, job.bundle_id))


def list_jobs(s: Session, limit: int = 100) -> list[dict[str, Any]]:
    jobs = s.scalars(select(FlJob).order_by(FlJob.created_at.desc()).limit(limit))
    return [job_dict(j, rounds=False) for j in jobs]


def update(s: Session, job_id: str, **changes: Any) -> FlJob:
    job = row(s, job_id)
    for key, value in changes.items():
        setattr(job, key, value)
    return job


def set_node(s: Session, job_id: str, node_id: str, **state: Any) -> None:
    job = row(s, job_id)
    job.nodes = {**job.nodes, node_id: {**job.nodes.get(node_id, {}), **state}}


def finish(s: Session, job_id: str, status: str, error: str | None = None,
           provenance: dict[str, Any] | None = None) -> FlJob:
    job = update(s, job_id, status=status, error=error[:500] if error else None, finished_at=utcnow())
    if provenance is not None:
        job.provenance = provenance
    audit.append(s, "platform", f"fl.{job.op}.finished", target=job.id, outcome=status,
                 details={"model": job.spec.get("model"), "error": job.error})
    return job


def interrupted(s: Session) -> list[str]:
    """Jobs left active by a previous platform process: marked failed (their SuperLink is gone)."""
    ids = list(s.scalars(select(FlJob.id).where(FlJob.status.in_(ACTIVE))))
    for job_id in ids:
        finish(s, job_id, "failed", "the platform restarted while the job ran")
    return ids

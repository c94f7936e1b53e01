"""Inference through the platform: a researcher asks one node to score its data with a trained model.

The platform queues an ``infer`` agent job for the node (bundle name/version/sha256, the training job, the trained
model's sha256, the series asked for, requester). The node's agent checks its own policy and its approval of the
bundle, downloads the bundle and the trained weights (signed requests, both re-hashed), runs the inference at the
node (results stay there) and answers with nothing but the disclosure-controlled summary, or that it was withheld.
The answer is stored like any agent job's (``job`` / ``job_result``); :func:`get` shows it to the researcher.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

from incisive.common.protocol import JobType
from incisive.federated.bundle import parse_ref
from incisive.platform.errors import BadRequest, NotFound
from incisive.platform.models import Job, JobResult
from incisive.platform.services import audit, aware, jobs, models, nodes, utcnow
from incisive.platform.settings import PlatformSettings

KIND = JobType.INFER
MAX_SERIES = 1000
UID = re.compile(r"[0-9]+(\.[0-9]+)*")
STATUS = {"ok": "completed", "refused": "refused", "error": "failed"}


def request(s: Session, username: str, model_ref: str, node_id: str, series: list[str] | None,
            project: str | None, settings: PlatformSettings) -> dict[str, Any]:
    """Validate and queue the node's ``infer`` job; returns it as :func:`get` shows it (status ``queued``)."""
    try:
        name, version, source = parse_ref(model_ref)
    except Exception:
        raise BadRequest("model must be NAME:VERSION@JOB") from None
    if not source:
        raise BadRequest("inference needs a trained model: NAME:VERSION@JOB")
    bundle = models.get(s, name, version)
    if KIND not in bundle.manifest.get("job_types", []):
        raise BadRequest(f"bundle {name}:{version} does not support inference")
    trained = models.trained(s, source[:32])
    if trained.bundle_id != bundle.id:
        raise BadRequest(f"job {source[:32]} trained another model")
    if node_id not in {n.node_id for n in nodes.active_nodes(s)}:
        raise BadRequest("unknown or revoked node")
    wanted = list(dict.fromkeys(series or []))
    if len(wanted) > MAX_SERIES or not all(len(u) <= 64 and UID.fullmatch(u) for u in wanted):
        raise BadRequest(f"series must be at most {MAX_SERIES} DICOM UIDs")
    payload = {"model": name, "version": version, "sha256": bundle.sha256, "job": trained.fl_job_id,
               "model_sha256": trained.sha256, "series": wanted, "requester": username, "project": project}
    created = jobs.create(s, None, KIND, payload, [node_id], settings.infer_timeout_s)
    job_id = str(created[node_id]["id"])
    s.flush()
    audit.append(s, username, "infer.request", target=job_id, node=node_id,
                 details={"model": f"{name}:{version}@{trained.fl_job_id}", "sha256": bundle.sha256,
                          "series": len(wanted), "project": project})
    return get(s, job_id)


def get(s: Session, job_id: str) -> dict[str, Any]:
    """An inference request and, once the node answered, what it sent: the summary, or why there is none."""
    job = s.get(Job, job_id[:32])
    if job is None or job.kind != KIND:
        raise NotFound("no such inference request")
    p = job.payload
    out: dict[str, Any] = {
        "id": job.id, "node": job.node_id, "model": f"{p.get('model')}:{p.get('version')}@{p.get('job')}",
        "sha256": p.get("sha256"), "series": len(p.get("series") or []), "requested_by": p.get("requester"),
        "created_at": _iso(job.created_at), "expires_at": _iso(job.expires_at), "result": None, "error": None}
    answer = s.get(JobResult, job.id)
    if answer is not None:
        out.update(status=STATUS.get(answer.status, "failed"), result=answer.body.get("result"),
                   error=answer.body.get("error"), answered_at=_iso(answer.received_at))
    elif job.status == "expired" or (aware(job.expires_at) or utcnow()) <= utcnow():
        out.update(status="expired", error="the node did not answer in time")
    else:
        out["status"] = "queued" if job.status == "pending" else "running"
    return out


def trained_for(s: Session, node_id: str, job_id: str) -> tuple[str, str, bytes]:
    """The trained model an ``infer`` job of this node names: (training job, sha256, weights). Only the node the
    job was queued for gets it, and only while the job is open."""
    job = s.get(Job, job_id[:32])
    if (job is None or job.kind != KIND or job.node_id != node_id or job.status in ("done", "expired")
            or (aware(job.expires_at) or utcnow()) <= utcnow()):
        raise NotFound("no open inference job for this node")
    trained = models.trained(s, str(job.payload.get("job", "")))
    audit.append(s, f"node:{node_id}", "model.download.trained", target=trained.fl_job_id, node=node_id,
                 details={"sha256": trained.sha256, "job": job.id})
    return trained.fl_job_id, trained.sha256, trained.weights


def _iso(value: Any) -> str | None:
    v = aware(value)
    return None if v is None else v.isoformat()

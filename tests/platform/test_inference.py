"""Inference requests through the platform (SQLite and PostgreSQL): a researcher queues an ``infer`` agent job for
one node, the node (a hand-signing fake here) fetches it and the trained model (signed; only the node the job is
for, only while it is open), answers, and the researcher reads the answer. The real agent is exercised in
tests/federated/test_infer_platform.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from incisive.common import signing
from incisive.federated.archive import pack, unpack
from incisive.federated.bundle import bundle_digest, shipped_bundle
from incisive.platform.errors import BadRequest, NotFound
from incisive.platform.home import Platform
from incisive.platform.models import FlJob, Job, JobResult
from incisive.platform.services import audit, fl_jobs, inference, models, nodes, utcnow
from tests.platform.conftest import Api, enrol_fake, invite

TABULAR = shipped_bundle("tabular-risk")


def add_trained_model(platform: Platform, bundle: Path, weights: bytes, by: str = "rita") -> str:
    """Register ``bundle`` and record a completed training job with ``weights`` as its model (no Flower run:
    the model was trained elsewhere, e.g. briefly at one node in a test); returns the job id."""
    name, version = (json.loads((bundle / "manifest.json").read_text())[k] for k in ("name", "version"))
    with platform.db.session() as s:
        models.register(s, pack(bundle), name, version, "ada")
    with platform.db.session() as s:
        row = models.get(s, name, version)
        job = FlJob(id=fl_jobs.new_job_id(), op="train", bundle_id=row.id, source_job=None, requested_by=by,
                    spec={"model": f"{name}:{version}", "sha256": row.sha256, "op": "train"}, status="completed",
                    nodes={}, server={}, rounds=[], created_at=utcnow(), finished_at=utcnow())
        s.add(job)
        s.flush()
        models.add_trained(s, job, weights, {"note": "trained outside Flower (test)"})
        return job.id


def npz(*arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, *arrays)
    return buf.getvalue()


def test_request_answer_and_model_download(api: Api) -> None:
    platform = api.platform
    node_a, node_b = enrol_fake(api, "hospital-a"), enrol_fake(api, "hospital-b")
    weights = npz(np.arange(31, dtype=np.float32))
    job_id = add_trained_model(platform, TABULAR, weights)
    body = {"model": f"tabular-risk:1@{job_id}", "node": "hospital-a", "series": ["1.2.3", "2.25.4"]}
    assert api.client.post("/api/v1/inference", json=body, headers=api.h("admin")).status_code == 403
    r = api.client.post("/api/v1/inference", json=body, headers=api.h("researcher"))
    assert r.status_code == 202, r.text
    req = r.json()
    assert req["status"] == "queued" and req["node"] == "hospital-a" and req["series"] == 2
    assert req["model"] == f"tabular-risk:1@{job_id}" and req["requested_by"] == "researcher"

    # only hospital-a is offered the job; its payload names the bundle, the trained model and their digests
    assert node_b.send("GET", "/agent/v1/jobs?wait=0").json()["jobs"] == []
    (job,) = node_a.send("GET", "/agent/v1/jobs?wait=0").json()["jobs"]
    assert job["id"] == req["id"] and job["type"] == "infer"
    p = job["payload"]
    assert (p["model"], p["version"], p["job"], p["requester"]) == ("tabular-risk", "1", job_id, "researcher")
    assert p["sha256"] == bundle_digest(TABULAR) and p["model_sha256"] == hashlib.sha256(weights).hexdigest()
    assert p["series"] == ["1.2.3", "2.25.4"]
    got = api.client.get(f"/api/v1/inference/{req['id']}", headers=api.h("dp-manager")).json()
    assert got["status"] == "running"

    # the trained model: signed, for the node the open job is for only
    r = node_a.send("GET", f"/agent/v1/infer/{req['id']}/model")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["job"] == job_id and base64.b64decode(data["weights"]) == weights
    assert data["sha256"] == hashlib.sha256(weights).hexdigest()
    assert node_b.send("GET", f"/agent/v1/infer/{req['id']}/model").status_code == 404
    assert node_a.send("GET", "/agent/v1/infer/nope/model").status_code == 404
    assert api.client.get(f"/agent/v1/infer/{req['id']}/model").status_code == 401

    # the node's answer is stored as the job's result and shown to the researcher
    summary = {"model": "tabular-risk:1", "job": job_id, "run": "ab12", "items": 40, "k": 5}
    r = node_a.send("POST", f"/agent/v1/jobs/{req['id']}/result",
                    {"status": "ok", "result": {"shared": True, "summary": summary}})
    assert r.status_code == 200, r.text
    got = api.client.get(f"/api/v1/inference/{req['id']}", headers=api.h("researcher")).json()
    assert got["status"] == "completed" and got["result"] == {"shared": True, "summary": summary}
    assert node_a.send("GET", f"/agent/v1/infer/{req['id']}/model").status_code == 404  # answered: closed
    with platform.db.session() as s:
        actions = [(e["action"], e["target"]) for e in audit.entries(s)]
    assert ("infer.request", req["id"]) in actions and ("model.download.trained", job_id) in actions


def test_refusal_expiry_and_bad_requests(platform: Platform) -> None:
    job_id = add_trained_model(platform, TABULAR, npz(np.zeros(3)))
    with platform.db.session() as s:
        nodes.enrol(s, invite(platform), "hospital-a", "A", signing.public_key_b64(signing.generate_private_key()))
    settings = platform.settings
    with platform.db.session() as s:
        req = inference.request(s, "rita", f"tabular-risk:1@{job_id}", "hospital-a", None, "p1", settings)
    with platform.db.session() as s:
        s.add(JobResult(job_id=req["id"], node_id="hospital-a", status="refused",
                        body={"status": "refused", "error": "bundle tabular-risk:1 is not approved at this node"},
                        received_at=utcnow()))
    with platform.db.session() as s:
        got = inference.get(s, req["id"])
    assert got["status"] == "refused" and "not approved" in got["error"] and got["result"] is None
    with platform.db.session() as s:
        other = inference.request(s, "rita", f"tabular-risk:1@{job_id}", "hospital-a", [], None, settings)
    with platform.db.session() as s:
        row = s.get(Job, other["id"])
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    with platform.db.session() as s:
        assert inference.get(s, other["id"])["status"] == "expired"
        with pytest.raises(NotFound):
            inference.trained_for(s, "hospital-a", other["id"])

    # a bundle without the infer job type
    no_infer = platform.home.parent / "no-infer"
    unpack(pack(TABULAR), no_infer)
    manifest = json.loads((no_infer / "manifest.json").read_text())
    manifest.update(name="train-only", job_types=["train"])
    (no_infer / "manifest.json").write_text(json.dumps(manifest))
    train_only = add_trained_model(platform, no_infer, npz(np.zeros(3)))
    bad = [("tabular-risk:1", "hospital-a", None), ("tabular-risk", "hospital-a", None),
           (f"tabular-risk:1@{job_id}", "nowhere", None), (f"tabular-risk:1@{job_id}", "hospital-a", ["1.2;drop"]),
           (f"train-only:1@{train_only}", "hospital-a", None), (f"tabular-risk:1@{train_only}", "hospital-a", None)]
    for ref, node_id, series in bad:
        with platform.db.session() as s, pytest.raises(BadRequest):
            inference.request(s, "rita", ref, node_id, series, None, settings)
    for ref in ("tabular-risk:1@nojob", "nothing:1@x"):
        with platform.db.session() as s, pytest.raises(NotFound):
            inference.request(s, "rita", ref, "hospital-a", None, None, settings)
    with platform.db.session() as s, pytest.raises(NotFound):
        inference.get(s, "nope")
    with platform.db.session() as s:
        fl_row = s.get(FlJob, job_id)
        assert fl_row is not None  # an FL job id is not an inference request
        with pytest.raises(NotFound):
            inference.get(s, job_id)

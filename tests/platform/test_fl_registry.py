"""The platform's model registry and FL job records (SQLite and PostgreSQL), their routes and RBAC, and the
agent's bundle download. The runner is replaced by a recorder here; real Flower runs are in
tests/federated/test_platform_fl.py."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from incisive.federated.archive import pack, unpack
from incisive.federated.bundle import bundle_digest, shipped_bundle
from incisive.platform.errors import BadRequest, Conflict, NotFound
from incisive.platform.home import Platform
from incisive.platform.models import FlJob
from incisive.platform.services import audit, fl_jobs, models
from tests.platform.conftest import Api, enrol_fake

TABULAR = shipped_bundle("tabular-risk")


class Recorder:
    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self, job_id: str) -> None:
        self.submitted.append(job_id)

    def recover(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_archive_round_trip_and_unsafe_entries(tmp_path: Path) -> None:
    data = pack(TABULAR)
    assert data == pack(TABULAR) and data[4:8] == b"\0\0\0\0"  # deterministic: no gzip timestamp either
    assert bundle_digest(unpack(data, tmp_path / "b")) == bundle_digest(TABULAR)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(Exception, match="unsafe"):
        unpack(buf.getvalue(), tmp_path / "c")
    with pytest.raises(Exception, match="not a bundle archive"):
        unpack(b"not gzip", tmp_path / "d")


def test_registry_service(platform: Platform) -> None:
    with platform.db.session() as s:
        record, created = models.register(s, pack(TABULAR), "tabular-risk", "1", "ada")
    assert created and record["sha256"] == bundle_digest(TABULAR) and record["kind"] == "tabular"
    with platform.db.session() as s:
        again, created = models.register(s, pack(TABULAR), "tabular-risk", "1", "ada")
    assert not created and again["sha256"] == record["sha256"]
    other = pack(shipped_bundle("lesion-cnn"))
    with platform.db.session() as s, pytest.raises(BadRequest, match="do not match"):
        models.register(s, other, "tabular-risk", "1", "ada")
    with platform.db.session() as s, pytest.raises(BadRequest):
        models.register(s, b"junk", "tabular-risk", "2", "ada")
    with platform.db.session() as s:
        assert [b["ref"] for b in models.list_bundles(s)] == ["tabular-risk:1"]
        row = models.get(s, "tabular-risk", "1")
        bundle = models.materialise(row, platform.home)
        assert bundle.digest == record["sha256"] and bundle.path.is_relative_to(platform.home)
        with pytest.raises(NotFound):
            models.get(s, "tabular-risk", "9")
        assert any(e["action"] == "model.register" for e in audit.entries(s))


def test_conflicting_bundle_is_refused(platform: Platform, tmp_path: Path) -> None:
    changed = tmp_path / "bundle"
    unpack(pack(TABULAR), changed)
    (changed / "task.py").write_text((changed / "task.py").read_text() + "\n# changed\n")
    with platform.db.session() as s:
        models.register(s, pack(TABULAR), "tabular-risk", "1", "ada")
    with platform.db.session() as s, pytest.raises(Conflict, match="bump the version"):
        models.register(s, pack(changed), "tabular-risk", "1", "ada")


def test_job_records_and_trained_models(api: Api) -> None:
    platform = api.platform
    for node_id in ("hospital-a", "hospital-b"):
        enrol_fake(api, node_id)
    with platform.db.session() as s:
        models.register(s, pack(TABULAR), "tabular-risk", "1", "ada")
    with platform.db.session() as s:
        job = fl_jobs.create(s, "rita", "train", "tabular-risk:1", {"rounds": 3, "strategy": "fedprox",
                                                                     "dp_epsilon": 3.0}, None, platform.settings)
    assert job["status"] == "queued" and set(job["nodes"]) == {"hospital-a", "hospital-b"}
    assert job["spec"]["rounds"] == 3 and job["spec"]["sha256"] == bundle_digest(TABULAR)
    rounds = [{"phase": "fit", "round": 1, "nodes": [{"node": "hospital-a", "n": 10}], "failures": []}]
    with platform.db.session() as s:
        fl_jobs.update(s, job["id"], status="running", flower_run_id="123", rounds=rounds)
        fl_jobs.set_node(s, job["id"], "hospital-b", status="refused", reason="not approved")
    with platform.db.session() as s:
        row = fl_jobs.row(s, job["id"])
        models.add_trained(s, row, b"weights", {"nodes": {"hospital-a": {"train_examples": 10}}})
        fl_jobs.finish(s, job["id"], "completed", provenance={"rounds": 1})
    with platform.db.session() as s:
        got = fl_jobs.get(s, job["id"])
        assert got["status"] == "completed" and got["rounds"] == rounds and got["finished_at"]
        assert got["nodes"]["hospital-b"] == {"status": "refused", "reason": "not approved"}
        assert models.describe(s, "tabular-risk", "1")["trained"][0]["job"] == job["id"]
        assert models.trained(s, job["id"]).weights == b"weights"
        assert [j["id"] for j in fl_jobs.list_jobs(s)] == [job["id"]]
    # evaluation of that trained model; errors for the rest
    with platform.db.session() as s:
        ev = fl_jobs.create(s, "rita", "evaluate", f"tabular-risk:1@{job['id']}", {}, ["hospital-a"],
                            platform.settings)
    assert ev["source_job"] == job["id"] and list(ev["nodes"]) == ["hospital-a"]
    bad: list[tuple[str, str, dict[str, Any], list[str] | None]] = [
        ("evaluate", "tabular-risk:1", {}, None), ("train", "tabular-risk", {}, None),
        ("train", "tabular-risk:1", {"strategy": "magic"}, None), ("train", "tabular-risk:1", {}, ["nowhere"]),
        ("predict", "tabular-risk:1", {}, None)]
    for op, ref, params, nodes in bad:
        with platform.db.session() as s, pytest.raises(BadRequest):
            fl_jobs.create(s, "rita", op, ref, params, nodes, platform.settings)
    with platform.db.session() as s, pytest.raises(NotFound):
        fl_jobs.create(s, "rita", "train", "nothing:1", {}, None, platform.settings)
    # a platform restart fails what was left running
    with platform.db.session() as s:
        fl_jobs.update(s, ev["id"], status="running")
    with platform.db.session() as s:
        assert fl_jobs.interrupted(s) == [ev["id"]]
    with platform.db.session() as s:
        assert s.get(FlJob, ev["id"]).status == "failed"  # type: ignore[union-attr]


def test_routes_and_roles(sqlite_api: Api) -> None:
    api = sqlite_api
    recorder = Recorder()
    api.client.app.state.fl = recorder  # type: ignore[attr-defined]
    node = enrol_fake(api, "hospital-a")
    gz = {"Content-Type": "application/octet-stream"}
    url = "/api/v1/models?name=tabular-risk&version=1"
    assert api.client.post(url, content=pack(TABULAR), headers={**gz, **api.h("researcher")}).status_code == 403
    r = api.client.post(url, content=pack(TABULAR), headers={**gz, **api.h("admin")})
    assert r.status_code == 201 and r.json()["created"], r.text
    assert api.client.post(url, content=b"junk", headers={**gz, **api.h("admin")}).status_code == 422
    assert api.client.get("/api/v1/models", headers=api.h("auditor")).json()[0]["ref"] == "tabular-risk:1"
    body = {"model": "tabular-risk:1", "rounds": 2}
    assert api.client.post("/api/v1/fl/jobs", json=body, headers=api.h("admin")).status_code == 403
    r = api.client.post("/api/v1/fl/jobs", json=body, headers=api.h("researcher"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert recorder.submitted == [job["id"]]
    assert api.client.get(f"/api/v1/fl/jobs/{job['id']}", headers=api.h("dp-manager")).json()["status"] == "queued"
    assert api.client.get("/api/v1/fl/jobs/nope", headers=api.h("researcher")).status_code == 404
    assert len(api.client.get("/api/v1/fl/jobs", headers=api.h("auditor")).json()) == 1
    # the agent's signed download: the archive and the sha256 the platform recorded
    r = node.send("GET", "/agent/v1/models/tabular-risk/1/bundle")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["sha256"] == bundle_digest(TABULAR) and base64.b64decode(data["archive"]) == pack(TABULAR)
    assert node.send("GET", "/agent/v1/models/tabular-risk/2/bundle").status_code == 404
    assert api.client.get("/agent/v1/models/tabular-risk/1/bundle").status_code == 401

"""Node-local inference with a really (briefly) trained lesion-cnn: catalogue rows on SQLite and PostgreSQL, one
DICOM Comprehensive 3D SR per scored series (highdicom re-reads it, it references the scored instances, it is in
the store, catalogued, served by QIDO/WADO and passes fsck, it holds no PHI), refusal without approval, and a
summary for the platform only when the node policy allows it."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select
from typer.testing import CliRunner

from incisive.cli import app
from incisive.federated.bundle import RegisteredBundle, load_task, shipped_bundle
from incisive.federated.jobs import Job
from incisive.federated.service import Workspace
from incisive.node.api.app import create_app
from incisive.node.api.tokens import create_token
from incisive.node.catalogue.models import InferenceResult, Instance, Series
from incisive.node.fl import approval, inference
from incisive.node.fl.data import NodeData
from incisive.node.fl.inference_sr import LESION_PROBABILITY, ModelRef, NotDeidentified, build_sr
from incisive.node.fsck import fsck
from incisive.node.home import Node
from incisive.node.policy import update_policy
from tests.federated.conftest import load_cohort, quick_lesion_weights

runner = CliRunner()


@dataclass
class Trained:
    workspace: Workspace
    bundle: RegisteredBundle
    job: Job


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cohort: Path) -> Trained:
    """lesion-cnn trained for a few epochs on a node holding the session cohort; the model saved as a job's."""
    root = tmp_path_factory.mktemp("inference")
    ws = Workspace(root / "ws")
    bundle = ws.registry.register(shipped_bundle("lesion-cnn"), "lesion-cnn", "1")
    weights = quick_lesion_weights(bundle.path, bundle.digest, root / "train-node", cohort)
    job = ws.jobs.create({"model": "lesion-cnn:1", "strategy": "fedavg"})
    job.save_model(weights)
    return Trained(ws, bundle, job)


def _needles(cohort: Path) -> set[bytes]:
    out: set[bytes] = set()
    for value in json.loads((cohort / "phi_manifest.json").read_text()):
        for variant in {value, value.upper(), value.replace("^", " "), value.replace("^", " ").upper()}:
            if len(variant) >= 4:
                out.add(variant.encode())
    return out


def test_inference_rows_and_sr(node: Node, cohort: Path, trained: Trained) -> None:
    load_cohort(node, cohort)
    approval.approve(node.home, trained.bundle)
    report = inference.infer(node, trained.bundle, trained.job.load_model(), trained.job.id)
    assert report["items"] > 0 and report["series"] > 0 and report["sr_written"] == report["series"]
    assert report["shareable"] is False and report["summary"] is None  # default policy: nothing for the platform
    with node.catalogue.session() as s:
        rows = list(s.scalars(select(InferenceResult).where(InferenceResult.run_id == report["run"])))
        sr_rows = {uid: h for uid, h in s.execute(
            select(Instance.sop_uid, Instance.object_hash).join(Series).where(Series.modality == "SR"))}
        scored = {uid for (uid,) in s.execute(select(Instance.sop_uid).where(Instance.has_pixels.is_(True)))}
    assert len(rows) == report["items"] and sum(r.positive for r in rows) == report["positive"]
    by_sr: dict[str, list[InferenceResult]] = defaultdict(list)
    for r in rows:
        assert (r.model, r.bundle_digest, r.job_id) == ("lesion-cnn:1", trained.bundle.digest, trained.job.id)
        assert 0.0 <= r.score <= 1.0 and r.positive == (r.score >= r.threshold) and r.threshold == 0.5
        assert r.sop_uid in scored and r.series_uid and r.sr_sop_uid and r.created_at is not None
        by_sr[r.sr_sop_uid].append(r)
    assert set(by_sr) == set(sr_rows) and len(sr_rows) == report["series"]
    needles = _needles(cohort)
    for sr_uid, items in by_sr.items():
        data = node.store.get(sr_rows[sr_uid])  # in the content-addressed store, checksum verified
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.Modality == "SR" and ds.SOPInstanceUID == sr_uid and ds.PatientIdentityRemoved == "YES"
        sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
        evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        assert [e.SeriesInstanceUID for e in evidence] == [items[0].series_uid]
        groups = sr.content.get_image_measurement_groups()
        assert len(groups) == 1 + len(items) and groups[0].tracking_identifier == "series"
        assert {i.referenced_sop_instance_uid for i in groups[0].source_images} == {r.sop_uid for r in items}
        (series_prob,) = groups[0].get_measurements(name=LESION_PROBABILITY)
        assert float(series_prob.value) == pytest.approx(max(r.score for r in items), abs=1e-5)
        per_instance = {g.source_images[0].referenced_sop_instance_uid:
                        float(g.get_measurements(name=LESION_PROBABILITY)[0].value) for g in groups[1:]}
        assert per_instance == pytest.approx({r.sop_uid: r.score for r in items}, abs=1e-5)
        algo = _texts(groups[0][0])  # TID 4019 Algorithm Identification: name, version, parameters
        assert algo["111001"] == {"lesion-cnn"} and algo["111003"] == {"1"}
        assert f"bundle-sha256={trained.bundle.digest}" in algo["111002"] and f"job={trained.job.id}" in algo["111002"]
        leaks = [n for n in needles if n in data]
        assert leaks == [], leaks
    report_fsck = fsck(node)
    assert report_fsck.clean, report_fsck.as_dict()
    # the catalogue rows hold no PHI either
    meta = MetaData()
    meta.reflect(node.catalogue.engine, only=["inference_result"])
    with node.catalogue.engine.connect() as conn:
        dump = repr(conn.execute(select(meta.tables["inference_result"])).all()).encode()
    assert [n for n in needles if n in dump] == []


def _texts(item: pydicom.Dataset) -> dict[str, set[str]]:
    """TEXT content item values below ``item`` by concept code value."""
    out: dict[str, set[str]] = defaultdict(set)
    for child in item.get("ContentSequence", []):
        if child.get("ValueType") == "TEXT":
            out[child.ConceptNameCodeSequence[0].CodeValue].add(str(child.TextValue))
        for code, values in _texts(child).items():
            out[code] |= values
    return out


def test_sr_served_by_qido_and_wado(sqlite_node: Node, cohort: Path, trained: Trained) -> None:
    load_cohort(sqlite_node, cohort)
    approval.approve(sqlite_node.home, trained.bundle)
    manifest = json.loads((trained.bundle.path / "manifest.json").read_text())
    keys = load_task(trained.bundle.path, trained.bundle.digest).load_data(NodeData(sqlite_node), manifest, "all").keys
    first = sorted(k.split("/")[0] for k in keys)[0]  # a series the bundle scores (labelled patient, CT/MR)
    report = inference.infer(sqlite_node, trained.bundle, trained.job.load_model(), trained.job.id, series=[first])
    assert report["series"] == 1 and report["sr_written"] == 1
    client = TestClient(create_app(sqlite_node))
    auth = {"Authorization": f"Bearer {create_token(sqlite_node, 'viewer', 'tests')}"}
    r = client.get("/dicom-web/series", params={"Modality": "SR"}, headers=auth)
    assert r.status_code == 200, r.text
    (found,) = r.json()
    study, series = found["0020000D"]["Value"][0], found["0020000E"]["Value"][0]
    r = client.get(f"/dicom-web/studies/{study}/series/{series}/instances", headers=auth)
    (inst,) = r.json()
    sop = inst["00080018"]["Value"][0]
    r = client.get(f"/dicom-web/studies/{study}/series/{series}/instances/{sop}", headers=auth)
    assert r.status_code == 200 and sop.encode() in r.content


def test_refused_without_approval_and_summary_by_policy(sqlite_node: Node, cohort: Path, trained: Trained) -> None:
    load_cohort(sqlite_node, cohort)
    with pytest.raises(PermissionError, match="not approved"):
        inference.infer(sqlite_node, trained.bundle, trained.job.load_model(), trained.job.id)
    other = trained.workspace.registry.register(shipped_bundle("tabular-risk"), "tabular-risk", "1")
    approval.approve(sqlite_node.home, other)  # another bundle's approval does not count
    with pytest.raises(PermissionError, match="not approved"):
        inference.infer(sqlite_node, trained.bundle, trained.job.load_model(), trained.job.id)
    with sqlite_node.catalogue.session() as s:
        assert s.scalar(select(InferenceResult.id)) is None
    approval.approve(sqlite_node.home, trained.bundle)
    report = inference.infer(sqlite_node, trained.bundle, trained.job.load_model(), trained.job.id, write_sr=False)
    assert report["summary"] is None and report["sr_written"] == 0
    assert inference.shareable_summary(sqlite_node, report["run"]) is None  # policy says no
    update_policy(sqlite_node.home, share_inference_summary=True, min_cell_count=1)
    shared = inference.shareable_summary(sqlite_node, report["run"])
    assert shared is not None
    assert shared["items"] == report["items"] and shared["positive"] == report["positive"]
    assert sum(shared["histogram"]["counts"]) == report["items"] and len(shared["histogram"]["edges"]) == 11
    text = json.dumps(shared)
    with sqlite_node.catalogue.session() as s:
        identifiers = {v for row in s.execute(select(InferenceResult.series_uid, InferenceResult.sop_uid))
                       for v in row if v}
    assert identifiers and not any(uid in text for uid in identifiers)  # never per-item rows or UIDs
    update_policy(sqlite_node.home, participate=False)
    assert inference.shareable_summary(sqlite_node, report["run"]) is None


def test_summary_suppression() -> None:
    out = inference.summarise([0.05] * 6 + [0.95] * 2, 0.5, k=5, series=3)
    assert out["histogram"]["counts"][0] == 6 and out["histogram"]["counts"][9] is None
    assert out["items"] is None and out["positive"] is None and out["series"] is None  # 2 positives < k
    out = inference.summarise([0.05] * 6 + [0.95] * 5, 0.5, k=5, series=5)
    assert out["positive"] == 5 and out["series"] == 5 and out["items"] == 11  # empty bins reveal nobody
    assert out["histogram"]["counts"] == [6, 0, 0, 0, 0, 0, 0, 0, 0, 5]
    out = inference.summarise([0.05] * 6 + [0.45] * 4 + [0.95] * 5, 0.5, k=5)
    assert out["histogram"]["counts"][4] is None and out["items"] is None  # total would reveal the 4
    assert out["series"] == 0  # a clinical model scores no series: nothing to hide
    assert inference.summarise([0.3] * 3, 0.5, k=5)["positive"] is None  # 3 negatives < k
    assert inference.summarise([0.3] * 5, 0.5, k=5)["positive"] == 0


def test_no_sr_from_an_identified_source(trained: Trained) -> None:
    ds = pydicom.Dataset()
    ds.PatientName, ds.SeriesInstanceUID = "Doe^Jane", "1.2.3"
    model = ModelRef("lesion-cnn", "1", trained.bundle.digest, trained.job.id)
    with pytest.raises(NotDeidentified):
        build_sr([ds], [0.9], model, 0.5, series_uid=str(hd.UID()), sop_uid=str(hd.UID()))


def test_cli_infer(sqlite_node: Node, cohort: Path, trained: Trained) -> None:
    load_cohort(sqlite_node, cohort)
    ws = ["--workspace", str(trained.workspace.root)]
    args = ["infer", "--model", f"lesion-cnn:1@{trained.job.id}", "--node", str(sqlite_node.home), *ws]
    r = runner.invoke(app, args)
    assert r.exit_code != 0 and "not approved" in str(r.exception)
    approval.approve(sqlite_node.home, trained.bundle)
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "inference_result" in r.output and "withheld" in r.output
    update_policy(sqlite_node.home, share_inference_summary=True)
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["shareable"] is True and out["summary"]["k"] == 5 and out["sr_written"] == out["series"] > 0
    r = runner.invoke(app, ["node", "fsck", "--home", str(sqlite_node.home), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["clean"], r.output  # two runs' SRs, all accounted for

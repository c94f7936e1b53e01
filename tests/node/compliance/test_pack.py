"""The evidence pack from a node holding the synthetic cohort (SQLite and PostgreSQL): every part is in the zip
(RoPA json+html(+pdf), processors and their documents byte for byte, residency, findings, breaches, readiness run
on this machine, backup verification, audit verification, de-identification profile), the manifest's sha256s and
SHA256SUMS (``sha256sum -c``) match, no PHI of the cohort anywhere in it, a changed document is left out and
named, and bad output paths are refused."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from incisive.cli.compliance import app
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import InputError
from incisive.node.catalogue import queries
from incisive.node.catalogue.models import Study
from incisive.node.compliance import breach, measures, processors, store, subjects
from incisive.node.compliance.pack import FORMAT, build_pack
from incisive.node.home import Node
from tests.node.compliance import complete_record, fill, make_pdf
from tests.node.test_phi_scan import _needles

runner = CliRunner()


def unpack(path: Path, to: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        zf.extractall(to)
        return {name: zf.read(name) for name in zf.namelist()}


def test_everything_in_the_pack(node: Node, cohort: Path, tmp_path: Path) -> None:
    fill(node, cohort)
    complete_record(node.home)
    dpa, tia = make_pdf(tmp_path / "dpa.pdf", "dpa"), make_pdf(tmp_path / "tia.pdf", "tia")
    processors.add_processor(node.home, "CloudCo Inc", "hosting", "US", "2026-01-10", dpa, scc=True, tia=tia,
                             checklist=["all=yes"])
    with node.catalogue.session() as s:
        study_uids = [str(u) for u in s.scalars(select(Study.study_uid))]
    bid = breach.open_breach(node, "Laptop with an export stolen", studies=study_uids[:2],
                             discovered=datetime.now(UTC) - timedelta(hours=1))["id"]
    NodeAudit(node.home).append("researcher:rita", "job.count", target="j1")
    patient_id = (cohort / "clinical.csv").read_text().splitlines()[1].split(",")[0]
    erased = subjects.erase(node, patient_id, "the patient withdrew consent")
    with node.catalogue.session() as s:
        patients = queries.stats(s)["patients"]
    out = tmp_path / "evidence.zip"
    r = runner.invoke(app, ["pack", "--out", str(out), "--home", str(node.home), "--json"])
    assert r.exit_code == 0, r.output
    manifest = json.loads(r.stdout)
    assert manifest["format"] == FORMAT and manifest["problems"] == []
    assert out.stat().st_mode & 0o777 == 0o600
    files = unpack(out, tmp_path / "x")
    names = set(files)
    digests = {hashlib.sha256(b).hexdigest() for b in (dpa.read_bytes(), tia.read_bytes())}
    assert {"ropa.json", "ropa.html", "processors.json", "residency.json", "check.json", "readiness.json",
            "backup.json", "audit.json", "deid.json", "breaches.json", f"breaches/{bid}.html",
            "erasures.json", "access.json", "manifest.json", "SHA256SUMS",
            *(f"documents/{d}.pdf" for d in digests)} == names
    for d in digests:
        assert hashlib.sha256(files[f"documents/{d}.pdf"]).hexdigest() == d
    listed = {f["name"]: f for f in json.loads(files["manifest.json"])["files"]}
    assert set(listed) == names - {"manifest.json", "SHA256SUMS"}
    for name, entry in listed.items():
        assert hashlib.sha256(files[name]).hexdigest() == entry["sha256"] and len(files[name]) == entry["size"]
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=tmp_path / "x", check=True, timeout=60)

    ropa = json.loads(files["ropa.json"])
    assert ropa["data_subjects"]["patients"] == patients < 10 and ropa["missing"] == []
    readiness = {m["id"]: m for m in ropa["measures"]}["readiness"]
    assert "not recorded" not in readiness["evidence"]  # the readiness check ran before the record was built
    assert b"Record of processing activities" in files["ropa.html"]
    assert [f["code"] for f in json.loads(files["check.json"])["findings"]] == ["breach.open"]
    assert json.loads(files["breaches.json"])[0]["id"] == bid and b"Art. 33" in files[f"breaches/{bid}.html"]
    assert [e["id"] for e in json.loads(files["erasures.json"])] == [erased["id"]]
    access = json.loads(files["access.json"])
    assert access["chain"]["ok"] and "researcher:rita" in {a["actor"] for a in access["actors"]}
    assert json.loads(files["readiness.json"])["profile"] == measures.last_readiness(node)["profile"]  # type: ignore[index]
    audit = json.loads(files["audit.json"])
    assert audit["ok"] and audit["entries"] >= 2 and audit["head"][0] == audit["entries"]
    backup = json.loads(files["backup.json"])
    assert backup["backup"]["alerts"] and "redundant" in backup["raid"]
    deid = json.loads(files["deid.json"])
    assert deid["door"] == "deidentify" and deid["sr_keep_text"] is False
    assert deid["quarantine_modalities"] == node.settings.quarantine_modalities and deid["actions"]
    assert json.loads(files["residency.json"])["transfers"][0]["status"] == "safeguarded"

    needles = _needles(cohort) | {u.encode() for u in study_uids}  # the breach's scope is counted, never listed
    found = sorted({(name, n.decode(errors="replace")) for name, blob in files.items() for n in needles
                    if n in blob})
    assert found == []


def test_changed_document_left_out_and_named(sqlite_node: Node, tmp_path: Path) -> None:
    entry = processors.add_processor(sqlite_node.home, "CloudCo GmbH", "hosting", "DE", "2026-01-10",
                                     make_pdf(tmp_path / "dpa.pdf"), checklist=["all=yes"])
    store.document_path(sqlite_node.home, entry["documents"][0]).write_bytes(b"%PDF-1.4 not what was signed")
    manifest = build_pack(sqlite_node, tmp_path / "e.zip", readiness=False)
    assert len(manifest["problems"]) == 1 and "does not match its sha256" in manifest["problems"][0]
    files = unpack(tmp_path / "e.zip", tmp_path / "x")
    assert not [n for n in files if n.startswith("documents/")]
    assert json.loads(files["readiness.json"]) == {"recorded": False}
    assert "processor.document_missing" in files["check.json"].decode()


def test_pdf_in_the_pack(sqlite_node: Node, tmp_path: Path) -> None:
    if shutil.which("chromium") is None or shutil.which("pdftotext") is None:
        pytest.skip("needs chromium and pdftotext")
    build_pack(sqlite_node, tmp_path / "e.zip", readiness=False, pdf=True)
    unpack(tmp_path / "e.zip", tmp_path / "x")
    text = subprocess.run(["pdftotext", str(tmp_path / "x" / "ropa.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "Record of processing activities" in text


def test_bad_out_refused(sqlite_node: Node, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    for out, match in [(tmp_path / "evidence.tar", "is a .zip file"), (tmp_path / "missing" / "e.zip", "existing"),
                       (tmp_path, "is a .zip file")]:
        with pytest.raises(InputError, match=match):
            build_pack(sqlite_node, out, readiness=False)
    folder = tmp_path / "dir.zip"
    folder.mkdir()
    with pytest.raises(InputError, match="a file name in an existing directory"):
        build_pack(sqlite_node, folder, readiness=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.zip"]  # no temporary file left

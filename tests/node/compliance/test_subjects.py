"""Data-subject lookup and erase on a node filled from the synthetic cohort (SQLite and PostgreSQL): counts only,
everything of the patient gone from store, quarantine and catalogue, the record and the audit without the
identifier or the pseudonym, "not held" changes nothing, ``kill -9`` at every step (a real subprocess) leaves a
record that a rerun or ``--resume`` finishes, and restoring a backup taken before the erase does not bring the
patient back."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from incisive.common.audit_log import NodeAudit
from incisive.common.exit_codes import ExitCode
from incisive.node import erasure
from incisive.node.backup import config as backup_config
from incisive.node.backup import ops
from incisive.node.catalogue.models import (
    ClinicalRecord,
    ImportIssue,
    InferenceResult,
    Instance,
    Patient,
    QuarantineItem,
    Series,
    Study,
)
from incisive.node.compliance import subjects
from incisive.node.fsck import fsck
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom
from tests.conftest import temp_pg_database

REASON = "Art. 17 request, ticket 4711"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def compliance_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``incisive compliance ARGS`` in a real process."""
    return subprocess.run([sys.executable, "-m", "incisive", "compliance", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=300, check=False)


def fill(node: Node, cohort: Path) -> Node:
    assert import_dicom(node, cohort / "dicom", workers=1).counts["imported"] > 0
    import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
    return node


@pytest.fixture
def filled(node: Node, cohort: Path) -> Node:
    return fill(node, cohort)


def patient_ids(cohort: Path) -> list[str]:
    with (cohort / "clinical.csv").open(encoding="utf-8") as fh:
        return [row["patient_id"] for row in csv.DictReader(fh)]


def phi(cohort: Path) -> list[str]:
    return [v for v in json.loads((cohort / "phi_manifest.json").read_text()) if len(v) >= 6]


def with_quarantine(node: Node, cohort: Path) -> str:
    """The patient id of a patient with a study, a quarantined instance and a clinical record."""
    for pid in patient_ids(cohort):
        c = subjects.lookup(node, pid)["counts"]
        if c["quarantined"] and c["clinical"] and c["instances"]:
            return pid
    raise AssertionError("the cohort has no quarantined patient")


def everything_of(node: Node, pseudonym: str) -> dict[str, Any]:
    """Row counts and object addresses that belong to ``pseudonym``."""
    with node.catalogue.session() as s:
        sops = list(s.execute(select(Instance.sop_uid, Instance.object_hash).join(Series).join(Study).join(Patient)
                              .where(Patient.pseudonym == pseudonym)))
        quarantined = list(s.scalars(select(QuarantineItem.object_hash).where(QuarantineItem.pseudonym == pseudonym)))
        return {"patient": s.scalar(select(func.count()).where(Patient.pseudonym == pseudonym)),
                "clinical": s.scalar(select(func.count()).where(ClinicalRecord.pseudonym == pseudonym)),
                "inference": s.scalar(select(func.count()).where(InferenceResult.pseudonym == pseudonym)),
                "sops": [r[0] for r in sops], "objects": [r[1] for r in sops], "quarantine_objects": quarantined}


def totals(node: Node) -> dict[str, int]:
    with node.catalogue.session() as s:
        return {m.__tablename__: int(s.scalar(select(func.count()).select_from(m)) or 0)
                for m in (Patient, Study, Series, Instance, QuarantineItem, ClinicalRecord, InferenceResult)}


def add_inference(node: Node, pseudonym: str, sop_uid: str) -> None:
    with node.catalogue.session() as s:
        s.add(InferenceResult(run_id="r1", model="tabular-risk:1", bundle_digest="0" * 64, job_id="j1",
                              pseudonym=pseudonym, series_uid=None, sop_uid=sop_uid, score=0.5, positive=True,
                              threshold=0.5, created_at=datetime.now(UTC)))


def private_text(home: Path) -> str:
    """Everything the erase writes and logs: records, the erasure list, the audit chain, the logs."""
    parts = []
    for folder in ("compliance", "audit", "logs"):
        for path in sorted((home / folder).rglob("*")):
            if path.is_file():
                parts.append(path.read_text(errors="replace"))
    return "\n".join(parts)


def assert_gone(node: Node, pseudonym: str, before: dict[str, Any]) -> None:
    now = everything_of(node, pseudonym)
    assert now["patient"] == now["clinical"] == now["inference"] == 0 and not now["sops"]
    assert not now["quarantine_objects"]
    for digest in before["objects"]:
        assert not node.store.path(digest).exists()
    for digest in before["quarantine_objects"]:
        assert not node.quarantine.path(digest).exists()
    assert subjects.lookup_pseudonym(node, pseudonym)["held"] is False
    assert fsck(node).clean
    assert NodeAudit(node.home).verify().ok


def test_lookup_counts_what_is_held_without_uids(filled: Node, cohort: Path) -> None:
    pid = with_quarantine(filled, cohort)
    pseudonym = filled.pseudonymiser.patient(pid)
    found = subjects.lookup(filled, pid)
    held = everything_of(filled, pseudonym)
    assert found["pseudonym"] == pseudonym and found["held"] is True and found["erasures"] == []
    c = found["counts"]
    assert c["patient"] == 1 and c["instances"] == len(held["sops"]) and c["quarantined"] == 1
    assert c["clinical"] == 1 and c["objects"] == len(held["objects"]) + 1 and c["studies"] >= 1
    # the clinical-only patient (imaging still to come) and an unknown one
    only_clinical = subjects.lookup(filled, patient_ids(cohort)[-1])
    assert only_clinical["held"] and only_clinical["counts"]["clinical"] == 1
    assert only_clinical["counts"]["instances"] == 0
    assert subjects.lookup(filled, "NOBODY-123")["held"] is False
    out = compliance_cli("subject", "lookup", "--patient-id", pid, "--home", str(filled.home), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["counts"] == c
    for uid in held["sops"]:
        assert uid not in out.stdout
    assert pid not in out.stdout


def test_erase_removes_everything_of_the_patient_only(filled: Node, cohort: Path) -> None:
    pid = with_quarantine(filled, cohort)
    pseudonym = filled.pseudonymiser.patient(pid)
    before = everything_of(filled, pseudonym)
    add_inference(filled, pseudonym, before["sops"][0])
    others = [p for p in patient_ids(cohort) if p != pid]
    others_before = {p: subjects.lookup(filled, p)["counts"] for p in others}
    totals_before = totals(filled)

    out = compliance_cli("subject", "erase", "--patient-id", pid, "--reason", REASON, "--confirm",
                         "--home", str(filled.home), "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["state"] == "done" and subjects.ID_RE.fullmatch(record["id"])
    assert record["erased"]["instances"] == len(before["sops"]) and record["erased"]["quarantined"] == 1
    assert record["erased"]["inference"] == 1 and record["reason"] == REASON and "journal" not in record
    assert_gone(filled, pseudonym, before)
    after = totals(filled)
    assert after["patient"] == totals_before["patient"] - 1
    assert after["instance"] == totals_before["instance"] - len(before["sops"])
    assert after["quarantine_item"] == totals_before["quarantine_item"] - 1
    assert after["clinical_record"] == totals_before["clinical_record"] - 1 and after["inference_result"] == 0
    assert {p: subjects.lookup(filled, p)["counts"] for p in others} == others_before
    # the record, the list, the audit chain and the logs name neither the patient nor the pseudonym
    text = private_text(filled.home)
    assert pid not in text and pseudonym not in text
    for value in phi(cohort):
        assert value not in text, value
    # nor does any byte left on the node: store, quarantine, and a SQLite catalogue with its write-ahead log
    files = [p for p in filled.home.rglob("*") if p.is_file()]
    if filled.catalogue.dialect == "sqlite":
        db = Path(filled.catalogue.engine.url.database or "")
        files += [p for p in db.parent.glob(db.name + "*") if p.is_file()]
    for path in files:
        assert pseudonym.encode() not in path.read_bytes(), path
    saved = json.loads((subjects.erasure_dir(filled) / f"{record['id']}.json").read_text())
    assert saved["state"] == "done" and saved["subject"] == record["subject"] and "journal" not in saved
    actions = [e["action"] for e in NodeAudit(filled.home).entries() if e.get("target") == record["id"]]
    assert actions == ["subject.erase.start", "subject.erase"]
    # listed as done; a lookup names the erasure; erasing again is "not held"
    listed = compliance_cli("subject", "ls", "--home", str(filled.home), "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [record["id"]]
    assert subjects.lookup(filled, pid)["erasures"] == [record["id"]]
    again = compliance_cli("subject", "erase", "--patient-id", pid, "--reason", REASON, "--confirm",
                           "--home", str(filled.home))
    assert again.returncode == ExitCode.INVALID and "not held" in again.stderr and record["id"] in again.stderr


def test_unknown_patient_is_not_held_and_nothing_changes(filled: Node) -> None:
    audit_before = list(NodeAudit(filled.home).entries())
    totals_before = totals(filled)
    out = compliance_cli("subject", "erase", "--patient-id", "MRN-NOT-HERE", "--reason", REASON, "--confirm",
                         "--home", str(filled.home))
    assert out.returncode == ExitCode.INVALID
    assert "not held" in out.stderr and "nothing changed" in out.stderr and "MRN-NOT-HERE" not in out.stderr
    assert totals(filled) == totals_before and list(NodeAudit(filled.home).entries()) == audit_before
    assert not list(subjects.erasure_dir(filled).glob("se-*.json"))
    assert not (filled.home / erasure.LIST).exists()


def test_erase_needs_confirm_and_a_reason_that_names_no_one(filled: Node, cohort: Path) -> None:
    pid = patient_ids(cohort)[0]
    pseudonym = filled.pseudonymiser.patient(pid)
    home = str(filled.home)
    refused = {
        "no confirm": compliance_cli("subject", "erase", "--patient-id", pid, "--reason", REASON, "--home", home),
        "no reason": compliance_cli("subject", "erase", "--patient-id", pid, "--confirm", "--home", home),
        "names the patient": compliance_cli("subject", "erase", "--patient-id", pid, "--reason",
                                            f"request of {pid}", "--confirm", "--home", home),
        "names the pseudonym": compliance_cli("subject", "erase", "--patient-id", pid, "--reason",
                                              f"request {pseudonym}", "--confirm", "--home", home),
        "no patient": compliance_cli("subject", "erase", "--reason", REASON, "--confirm", "--home", home),
    }
    for label, out in refused.items():
        assert out.returncode == ExitCode.INVALID, (label, out.stdout, out.stderr)
        assert pid not in out.stderr and pseudonym not in out.stderr, label
    assert subjects.lookup(filled, pid)["held"] and not list(subjects.erasure_dir(filled).glob("se-*.json"))


@pytest.mark.parametrize("step", subjects.STEPS)
def test_kill_9_at_every_step_leaves_a_record_that_finishes(filled: Node, cohort: Path, step: str) -> None:
    pid = with_quarantine(filled, cohort)
    pseudonym = filled.pseudonymiser.patient(pid)
    before = everything_of(filled, pseudonym)
    others = {p: subjects.lookup(filled, p)["counts"] for p in patient_ids(cohort) if p != pid}
    killed = compliance_cli("subject", "erase", "--patient-id", pid, "--reason", REASON, "--confirm",
                            "--home", str(filled.home), env={**ENV, subjects.KILL_ENV: step})
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
    [record] = [json.loads(p.read_text()) for p in subjects.erasure_dir(filled).glob("se-*.json")]
    assert record["state"] == "erasing" and record["erased"]["instances"] == len(before["sops"])
    assert pid not in json.dumps(record) and pseudonym not in json.dumps(record)
    assert subjects.pending_findings(filled)[0]["subject"] == record["id"]
    if subjects.STEPS.index(step) % 2:  # the same erase again
        out = compliance_cli("subject", "erase", "--patient-id", pid, "--reason", REASON, "--confirm",
                             "--home", str(filled.home), "--json")
    else:
        out = compliance_cli("subject", "erase", "--resume", "--home", str(filled.home), "--json")
    assert out.returncode == 0, out.stderr
    [done] = [json.loads(p.read_text()) for p in subjects.erasure_dir(filled).glob("se-*.json")]
    assert done["id"] == record["id"] and done["state"] == "done" and "journal" not in done
    assert list(erasure.load_list(filled.home / erasure.LIST)) == [record["id"]]
    assert_gone(filled, pseudonym, before)
    assert {p: subjects.lookup(filled, p)["counts"] for p in others} == others
    assert subjects.pending_findings(filled) == []
    assert pseudonym not in private_text(filled.home)


def test_resume_with_nothing_unfinished_does_nothing(filled: Node) -> None:
    out = compliance_cli("subject", "erase", "--resume", "--home", str(filled.home), "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == []


@contextlib.contextmanager
def empty_catalogue(catalogue_url: str) -> Iterator[str]:
    """Where a restore puts its catalogue: '' (SQLite in the new node directory) or an empty PostgreSQL database."""
    if catalogue_url.startswith("sqlite"):
        yield ""
        return
    with temp_pg_database() as url:
        yield url


def restore(target: backup_config.Target, node: Node, snapshot: str, to: Path,
            catalogue_url: str) -> tuple[Any, dict[str, Any], bool, list[str]]:
    """Restore ``snapshot`` into ``to``: the report, what the restored node holds per pseudonym, whether fsck is
    clean, and the restored node's audit actions."""
    with empty_catalogue(catalogue_url) as url:
        report = ops.restore(target, node.settings.node_id, snapshot, to, url)
        restored = Node.open(to)
        try:
            held = {p: subjects.lookup_pseudonym(restored, p) for p in erasure.pseudonyms(restored)}
            return report, held, fsck(restored).clean, [e["action"] for e in NodeAudit(to).entries()]
        finally:
            restored.catalogue.dispose()


def test_restoring_a_backup_taken_before_the_erase_does_not_bring_the_patient_back(
        filled: Node, cohort: Path, tmp_path: Path, catalogue_url: str) -> None:
    drive = tmp_path / "drive"
    drive.mkdir()
    target = backup_config.add_target(filled.home, "usb", str(drive))
    _, first = ops.run(filled, target)
    pid = with_quarantine(filled, cohort)
    pseudonym = filled.pseudonymiser.patient(pid)
    record = subjects.erase(filled, pid, REASON)
    assert record["backups"]["targets"] == [{"name": "usb", "kind": "dir", "list": "listed"}]
    kept = {p: subjects.lookup_pseudonym(filled, p) for p in erasure.pseudonyms(filled)}
    assert pseudonym not in kept
    repo_list = drive / "incisive" / filled.settings.node_id / erasure.REPOSITORY_LIST

    # the snapshot from before the erase still holds the patient; restoring it removes them again (the list the
    # erase wrote into the repository)
    report, held, clean, actions = restore(target, filled, first.id, tmp_path / "restored", catalogue_url)
    assert report.erased_again == 1 and any("removed again" in w for w in report.warnings)
    assert held == kept and clean and actions == ["subject.erase.reapplied"]
    assert list(erasure.load_list(tmp_path / "restored" / erasure.LIST)) == [record["id"]]
    assert pseudonym not in private_text(tmp_path / "restored")

    # a drive that missed the list at erase time (unplugged) learns it from any later snapshot's configuration
    _, second = ops.run(filled, target)
    repo_list.unlink()
    report, held, clean, _ = restore(target, filled, first.id, tmp_path / "restored-2", catalogue_url)
    assert report.erased_again == 1 and held == kept and clean
    # the snapshot taken after the erase holds nothing of the patient: nothing to remove, the list kept
    report, held, clean, _ = restore(target, filled, second.id, tmp_path / "restored-3", catalogue_url)
    assert report.erased_again == 0 and held == kept and clean
    assert list(erasure.load_list(tmp_path / "restored-3" / erasure.LIST)) == [record["id"]]


def test_an_erased_patient_arriving_again_is_refused_at_the_door(filled: Node, cohort: Path) -> None:
    pid = patient_ids(cohort)[0]
    pseudonym = filled.pseudonymiser.patient(pid)
    before = totals(filled)
    held = subjects.lookup(filled, pid)["counts"]
    subjects.erase(filled, pid, REASON)
    report = import_dicom(filled, cohort / "dicom", workers=1)  # the same folder again: everyone else a duplicate
    assert report.counts["rejected"] == held["instances"] + held.get("quarantined", 0)
    assert report.counts.get("imported", 0) == 0
    assert subjects.lookup_pseudonym(filled, pseudonym)["held"] is False
    assert totals(filled)["patient"] == before["patient"] - 1
    with filled.catalogue.session() as s:  # each refusal recorded with the reason, as any rejected file
        reasons = set(s.scalars(select(ImportIssue.reason).where(ImportIssue.outcome == "rejected")))
    assert reasons == {erasure.ERASED}


def test_an_erased_patients_clinical_rows_are_not_stored_again(filled: Node, cohort: Path) -> None:
    from incisive.node.ingest.clinical import store_pseudonymised_rows

    pid = patient_ids(cohort)[0]
    pseudonym = filled.pseudonymiser.patient(pid)
    subjects.erase(filled, pid, REASON)
    report = import_clinical(filled, cohort / "clinical.csv", drop=["patient_name"])
    assert report.counts["erased"] == 1
    assert store_pseudonymised_rows(filled, [{"patient_id": pseudonym, "sex": "F"}]) == \
        {"stored": 0, "duplicates": 0, "erased": 1}
    assert subjects.lookup_pseudonym(filled, pseudonym)["held"] is False

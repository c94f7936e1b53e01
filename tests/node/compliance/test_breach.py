"""The breach workflow (GDPR Art. 33/34) on a real node: the 72 h clock from awareness, numbers computed from the
catalogue (SQLite and PostgreSQL), phased updates, the rules on dates, measures and delay reasons (refused input
changes nothing), the audit chain, the Art. 33(3) report as HTML and PDF (pdftotext) without PHI, the findings
for ``compliance check``, the CLI and ``node status``."""

from __future__ import annotations

import json
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from incisive.cli import app
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import InputError
from incisive.node.catalogue import queries
from incisive.node.catalogue.models import ClinicalRecord, Instance, Patient, Series, Study
from incisive.node.compliance import breach, breach_report, store
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom
from tests.node.test_phi_scan import _needles

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DISCOVERED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
runner = CliRunner()


def filled(node: Node, cohort: Path) -> Node:
    import_dicom(node, cohort / "dicom", workers=1)
    import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
    return node


def snapshot(node: Node) -> tuple[dict[str, bytes], tuple[int, str] | None]:
    """Every breach file's bytes and the audit head: a refused step must leave both as they were."""
    directory = breach.breach_dir(node)
    files = {p.name: p.read_bytes() for p in directory.glob("*.json")} if directory.is_dir() else {}
    return files, NodeAudit(node.home).head()


def refused(node: Node, match: str, fn: Any, *args: Any, **kwargs: Any) -> InputError:
    before = snapshot(node)
    with pytest.raises(InputError, match=match) as info:
        fn(node, *args, **kwargs)
    assert snapshot(node) == before
    return info.value


def expected_numbers(node: Node, study_uids: list[str], series_uids: list[str]) -> dict[str, int]:
    """The numbers by plain joins, independent of breach_scope."""
    with node.catalogue.session() as s:
        study_ids = set(s.scalars(select(Study.id).where(Study.study_uid.in_(study_uids))))
        study_ids |= set(s.scalars(select(Series.study_id).where(Series.series_uid.in_(series_uids))))
        series_ids = set(s.scalars(select(Series.id).where(Series.study_id.in_(study_ids)
                                                           | Series.series_uid.in_(series_uids))))
        patients = set(s.scalars(select(Patient.pseudonym).join(Study).where(Study.id.in_(study_ids))))
        instances = s.scalar(select(func.count(Instance.id)).where(Instance.series_id.in_(series_ids)))
        clinical = s.scalar(select(func.count(ClinicalRecord.id)).where(ClinicalRecord.pseudonym.in_(patients)))
    return {"patients": len(patients), "studies": len(study_ids), "series": len(series_ids),
            "instances": int(instances or 0), "clinical_rows": int(clinical or 0)}


def test_numbers_from_the_catalogue(node: Node, cohort: Path) -> None:
    filled(node, cohort)
    with node.catalogue.session() as s:
        rows = s.execute(select(Patient.pseudonym, Study.study_uid).join(Study).order_by(Study.study_uid)).all()
        clinical = set(s.scalars(select(ClinicalRecord.pseudonym)))
        multi = set(s.scalars(select(Patient.pseudonym).join(Study).join(Series).where(Series.modality.in_(["CT",
                                                                                                          "MR"]))))
        a = next(r.pseudonym for r in rows if r.pseudonym in clinical & multi)  # a CT/MR patient with clinical row
        b = next(r.pseudonym for r in rows if r.pseudonym in clinical and r.pseudonym != a)
        a_studies = [r.study_uid for r in rows if r.pseudonym == a]
        b_series = s.scalars(select(Series.series_uid).join(Study).join(Patient).where(Patient.pseudonym == b)
                             .order_by(Series.series_uid)).first()
        assert b_series is not None
    record = breach.open_breach(node, "Misdirected export of imaging studies", discovered=DISCOVERED,
                                nature=["confidentiality"], studies=[",".join(a_studies)], series=[b_series],
                                now=NOW)
    want = expected_numbers(node, a_studies, [b_series])
    assert record["numbers"] == want and want["patients"] == 2 and want["instances"] > want["series"] >= 2
    assert want["clinical_rows"] == 2
    assert record["categories"]["subjects"] == ["patients (imaging studies)", "patients (clinical records)"]
    data = " ".join(record["categories"]["data"])
    with node.catalogue.session() as s:
        modalities = set(s.scalars(select(Series.modality).join(Study).join(Patient)
                                   .where(Patient.pseudonym.in_([a, b]))))
    assert all(m in data for m in modalities if m) and "clinical records" in data
    assert record["deadline"] == "2026-12-04T09:00:00Z" and record["scope_digest"]

    # a later phase widens the scope: the numbers are those of the union, counted once
    with node.catalogue.session() as s:
        more = s.scalars(select(Study.study_uid).order_by(Study.study_uid.desc()).limit(2)).all()
    updated = breach.update_breach(node, record["id"], studies=more, information="two more studies affected", now=NOW)
    assert updated["numbers"] == expected_numbers(node, sorted(set(a_studies) | set(more)), [b_series])
    assert updated["updates"][-1]["fields"] == ["information", "scope"]

    # the hospital's original UID (as the PACS shows it) maps with the node's key to the stored one
    source = next(p for p in sorted((cohort / "dicom").rglob("*.dcm"))
                  if node.pseudonymiser.uid(str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID))
                  in {r.study_uid for r in rows})
    original = str(pydicom.dcmread(source, stop_before_pixels=True).StudyInstanceUID)
    by_original = breach.open_breach(node, "Same study, named by its PACS UID", studies=[original], now=NOW)
    assert by_original["scope"]["studies"] == [node.pseudonymiser.uid(original)]
    assert original.encode() not in breach.breach_dir(node).joinpath(f"{by_original['id']}.json").read_bytes()

    # a UID the node does not hold: a clear error that quotes no UID, nothing recorded
    error = refused(node, "1 of the 2 study UIDs", breach.open_breach, "x", studies=[a_studies[0], "1.2.3.999"],
                    now=NOW)
    assert "1.2.3.999" not in str(error) and a_studies[0] not in str(error)

    whole = breach.open_breach(node, "Ransomware on the node's host", all_data=True, now=NOW)
    with node.catalogue.session() as s:
        stats = queries.stats(s)
    assert {k: whole["numbers"][k] for k in ("patients", "studies", "series", "instances")} == \
        {k: stats[k] for k in ("patients", "studies", "series", "instances")}
    assert whole["numbers"]["clinical_rows"] == 10


def test_clock_and_dates(sqlite_node: Node) -> None:
    node = sqlite_node
    refused(node, "in the future", breach.open_breach, "Laptop stolen", discovered=NOW + timedelta(minutes=1),
            now=NOW)
    record = breach.open_breach(node, "Laptop stolen", discovered=DISCOVERED, now=NOW)
    assert record["id"].startswith("br-2026-12-01-") and record["opened_at"] == "2026-12-03T12:00:00Z"
    assert breach.state(record, NOW)["hours_left"] == 21.0
    default = breach.open_breach(node, "Found an open share", now=NOW)
    assert default["discovered_at"] == "2026-12-03T12:00:00Z" and default["deadline"] == "2026-12-06T12:00:00Z"
    bid = record["id"]
    refused(node, "before the breach was discovered", breach.update_breach, bid, information="early",
            at=DISCOVERED - timedelta(seconds=1), now=NOW)
    refused(node, "in the future", breach.update_breach, bid, information="later", at=NOW + timedelta(hours=1), now=NOW)
    refused(node, "before the breach was discovered", breach.update_breach, bid,
            dpa_notified_at=DISCOVERED - timedelta(hours=1), now=NOW)
    refused(node, "in the future", breach.update_breach, bid, subjects_notified_at=NOW + timedelta(days=1), now=NOW)
    refused(node, "before the breach was discovered", breach.close_breach, bid, measures="wiped",
            at=DISCOVERED - timedelta(days=1), now=NOW)
    refused(node, "nothing to update", breach.update_breach, bid, now=NOW)
    refused(node, "unknown breach nature 'secrecy'", breach.update_breach, bid, nature=["secrecy"], now=NOW)
    refused(node, "0 or more", breach.update_breach, bid, approx_records=-1, now=NOW)
    refused(node, "not an ISO 8601 time", lambda _n: breach.parse_time("yesterday", "--at"))
    assert breach.parse_time("2026-12-01T09:00Z", "--at") == DISCOVERED
    assert breach.parse_time("2026-12-01 10:00+01:00", "--at") == DISCOVERED

    # notified after the deadline: the reasons for the delay are required, then recorded
    late = DISCOVERED + timedelta(hours=80)
    after = late + timedelta(hours=1)
    refused(node, "after the 72 h deadline: give the reasons", breach.update_breach, bid, dpa_notified_at=late,
            now=after)
    record = breach.update_breach(node, bid, dpa_notified_at=late, delay_reason="the extent was unknown until the "
                                  "forensic report", now=after)
    row = breach.state(record, after)
    assert row["notified"] and row["late_notification"] and not row["overdue"]
    refused(node, "already recorded", breach.update_breach, bid, dpa_notified_at=late, now=after)
    record = breach.update_breach(node, bid, subjects_notified_at=after, consequences="low: pseudonymised data",
                                  proposed="encrypt laptops", now=after)
    assert record["subjects_notified_at"] == breach.iso(after) and record["measures"][0]["kind"] == "proposed"
    assert [u["step"] for u in record["updates"]] == ["open", "update", "update"]


def test_close_rules_and_unknown_ids(sqlite_node: Node) -> None:
    node = sqlite_node
    bid = breach.open_breach(node, "Backup disk lost in transit", discovered=DISCOVERED, now=NOW)["id"]
    refused(node, "has no measures entry", breach.close_breach, bid, now=NOW)
    past = DISCOVERED + timedelta(hours=73)
    breach.update_breach(node, bid, measures="disk was encrypted; key revoked", now=NOW)
    refused(node, "not notified to the authority and the 72 h deadline passed", breach.close_breach, bid, now=past)
    closed = breach.close_breach(node, bid, delay_reason="no risk: encrypted disk, so not notified", now=past)
    assert closed["status"] == "closed" and closed["closed_at"] == breach.iso(past)
    refused(node, "is closed", breach.update_breach, bid, information="more", now=past)
    refused(node, "already closed", breach.close_breach, bid, measures="again", now=past)
    within = breach.open_breach(node, "Wrong recipient", discovered=NOW, now=NOW)["id"]
    assert breach.close_breach(node, within, measures="recipient deleted it", now=NOW)["status"] == "closed"

    for bad in ("br-2000-01-01-0000", "../../etc/passwd", "br-2026-12-01-ZZZZ"):
        for step in (breach.load, breach.close_breach, breach_report.report):
            with pytest.raises(InputError, match=r"no breach br-2000|unknown breach id"):
                step(node, bad)
        refused(node, "no breach br-2000|unknown breach id", breach.update_breach, bad, information="x", now=NOW)
    assert sorted(p.name for p in breach.breach_dir(node).iterdir() if p.suffix == ".json") == \
        sorted(f"{b}.json" for b in (bid, within))


def test_free_text_never_quotes_uids(sqlite_node: Node) -> None:
    node = sqlite_node
    for text in ("study 2.25.123456789012345678 was exposed", "see 1.2.840.113619.2.55.3",
                 "patient PABCDEFGHIJKLMNOP affected"):
        refused(node, "looks like it quotes a DICOM UID or a patient pseudonym", breach.open_breach, text, now=NOW)
    refused(node, "must not be empty", breach.open_breach, "   ", now=NOW)
    assert breach.open_breach(node, "access from 10.0.0.12 via a leaked VPN account", now=NOW)["id"]


def test_findings_for_compliance_check(sqlite_node: Node) -> None:
    node = sqlite_node
    assert breach.open_findings(node) == []
    bid = breach.open_breach(node, "Phishing of an operator account", discovered=DISCOVERED, now=NOW)["id"]
    [finding] = breach.open_findings(node, NOW)
    assert finding["code"] == "breach.open" and finding["severity"] == "fail" and finding["subject"] == bid
    assert "2026-12-04T09:00:00Z" in finding["message"] and "21.0 h left" in finding["message"]
    later = DISCOVERED + timedelta(hours=75)
    [finding] = breach.open_findings(node, later)
    assert finding["code"] == "breach.overdue" and "3.0 h ago" in finding["message"]
    assert "--dpa-notified-at" in finding["fix"]
    breach.update_breach(node, bid, dpa_notified_at=NOW, now=NOW)
    [finding] = breach.open_findings(node, later)
    assert finding["code"] == "breach.open" and "notified at 2026-12-03T12:00:00Z" in finding["message"]
    breach.close_breach(node, bid, measures="password reset, sessions revoked", now=later)
    assert breach.open_findings(node, later) == []
    (breach.breach_dir(node) / "br-2026-12-02-abcd.json").write_text("{torn")
    [finding] = breach.open_findings(node, later)
    assert finding["code"] == "breach.unreadable" and finding["severity"] == "fail"
    assert [r["status"] for r in breach.list_breaches(node, later)] == ["unreadable", "closed"]
    assert breach.heartbeat_summary(node, later) == []


def test_heartbeat_summary_is_small(sqlite_node: Node) -> None:
    node = sqlite_node
    for i in range(breach.HEARTBEAT_MAX + 3):
        breach.open_breach(node, f"incident {i}", discovered=DISCOVERED + timedelta(minutes=i), now=NOW)
    beats = breach.heartbeat_summary(node, NOW)
    assert len(beats) == breach.HEARTBEAT_MAX and beats[0]["deadline"] == "2026-12-04T09:00:00Z"
    assert set(beats[0]) == {"id", "deadline", "hours_left", "notified"} and beats[0]["hours_left"] == 21.0
    assert len(json.dumps(beats)) < 2500


def test_concurrent_updates_keep_every_phase(sqlite_node: Node) -> None:
    node = sqlite_node
    bid = breach.open_breach(node, "Credential leak", discovered=DISCOVERED, now=NOW)["id"]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            breach.update_breach(node, bid, information=f"phase {i}", now=NOW)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    record = breach.load(node, bid)
    assert sorted(e["text"] for e in record["information"]) == sorted(f"phase {i}" for i in range(8))
    assert sorted(u["seq"] for u in record["updates"]) == list(range(9))


def pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def test_report_html_pdf_audit_without_phi(node: Node, cohort: Path, tmp_path: Path) -> None:
    """The whole flow through the CLI on a node holding the synthetic cohort: the report's Art. 33(3) content in
    HTML and PDF, every step in the audit chain, and no PHI (nor a UID or pseudonym) in any output."""
    filled(node, cohort)
    store.set_contact(node.home, "Dana Privacy", "dpo-office@hospital.example", "technical contact",
                      "Erik Officer", "dpo@hospital.example")
    with node.catalogue.session() as s:
        uids = s.scalars(select(Study.study_uid).order_by(Study.study_uid).limit(3)).all()
        pseudonyms = s.scalars(select(Patient.pseudonym)).all()
        every_uid = [*s.scalars(select(Study.study_uid)), *s.scalars(select(Series.series_uid))]
    home = ["--home", str(node.home)]
    discovered = (datetime.now(UTC) - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%MZ")
    r = runner.invoke(app, ["compliance", "breach", "open", "--summary", "Imaging export sent to a wrong partner",
                            "--discovered", discovered, "--nature", "confidentiality", "--studies", ",".join(uids),
                            *home, "--json"])
    assert r.exit_code == 0, r.output
    bid = json.loads(r.stdout)["id"]
    assert "scope" not in json.loads(r.stdout)  # the UIDs stay in the breach file
    for args in (["--consequences", "Low risk of re-identification: pseudonymised images"],
                 ["--measures", "Partner confirmed deletion in writing", "--info", "transfer log reviewed"],
                 ["--proposed", "Four-eyes check on every export"],
                 ["--dpa-notified-at", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")]):
        r = runner.invoke(app, ["compliance", "breach", "update", bid, *args, *home])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["compliance", "breach", "ls", *home, "--json"])
    [row] = json.loads(r.stdout)
    assert row["id"] == bid and row["notified"] and 66 < row["hours_left"] < 68
    html, pdf = tmp_path / "out" / "breach.html", tmp_path / "out" / "breach.pdf"
    html.parent.mkdir()
    r = runner.invoke(app, ["compliance", "breach", "report", bid, "--html", str(html), "--pdf", str(pdf), *home,
                            "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    numbers = expected_numbers(node, list(uids), [])
    assert report["nature"]["numbers"] == numbers
    text = pdf_text(pdf)
    page = html.read_text()
    flat = " ".join(text.split())
    for needle in ("(a) Nature of the breach", "Art. 33(3)(a)", "(b) Contact point", "(c) Likely consequences",
                   "(d) Measures taken or proposed", f"{numbers['patients']} patients",
                   f"{numbers['instances']} image instances", f"{numbers['clinical_rows']} clinical records",
                   "Dana Privacy", "dpo-office@hospital.example", "Erik Officer", "Low risk of re-identification",
                   "Partner confirmed deletion in writing", "Four-eyes check", "transfer log reviewed",
                   "confidentiality breach", bid):
        assert needle in flat, needle
        assert needle.replace("&", "&amp;") in " ".join(page.split()), needle
    assert "MISSING (incisive compliance set controller-name" in flat

    # every step in the audit chain, which still verifies; none of them quotes a UID, pseudonym or free text
    entries = [e for e in NodeAudit(node.home).entries() if e["target"] == bid]
    assert [e["action"] for e in entries] == ["breach.open"] + ["breach.update"] * 4
    assert NodeAudit(node.home).verify().ok
    audit_bytes = (node.home / "audit" / "audit.jsonl").read_bytes()
    for secret in [*every_uid, *pseudonyms, "wrong partner", "Partner confirmed"]:
        assert secret.encode() not in audit_bytes
    outputs = {"html": page.encode(), "pdf-text": text.encode(), "pdf": pdf.read_bytes(), "json": r.stdout.encode(),
               "audit": audit_bytes, "breach-file": next(breach.breach_dir(node).glob("br-*.json")).read_bytes()}
    leaks = sorted({(k, n.decode(errors="replace")) for k, blob in outputs.items() for n in _needles(cohort)
                    if n in blob})
    assert leaks == []
    for kind in ("html", "pdf-text", "json", "audit"):
        assert not any(u.encode() in outputs[kind] for u in [*every_uid, *pseudonyms]), kind

    # close, then the node status shows no open breach; a second, overdue one is shown red
    assert runner.invoke(app, ["compliance", "breach", "close", bid, *home]).exit_code == 0
    old = (datetime.now(UTC) - timedelta(hours=80)).strftime("%Y-%m-%dT%H:%MZ")
    r = runner.invoke(app, ["compliance", "breach", "open", "--summary", "Found late", "--discovered", old, *home])
    assert r.exit_code == 0 and "OVERDUE" in r.output


def test_cli_errors_and_node_status(sqlite_node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    from incisive.common import output

    monkeypatch.setattr(output.console, "_width", 250)  # the tables unwrapped, whatever ran before
    node = sqlite_node
    home = ["--home", str(node.home)]
    future = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%MZ")
    r = runner.invoke(app, ["compliance", "breach", "open", "--summary", "x", "--discovered", future, *home])
    assert isinstance(r.exception, InputError) and "in the future" in str(r.exception)
    r = runner.invoke(app, ["compliance", "breach", "close", "br-2026-01-01-0000", *home])
    assert isinstance(r.exception, InputError) and "no breach br-2026-01-01-0000" in str(r.exception)
    assert not breach.breach_dir(node).is_dir() or not list(breach.breach_dir(node).glob("*.json"))
    r = runner.invoke(app, ["compliance", "breach", "ls", *home])
    assert r.exit_code == 0 and "no breach recorded" in r.output

    soon = (datetime.now(UTC) - timedelta(hours=55)).strftime("%Y-%m-%dT%H:%MZ")
    late = (datetime.now(UTC) - timedelta(hours=80)).strftime("%Y-%m-%dT%H:%MZ")
    ids = [json.loads(runner.invoke(app, ["compliance", "breach", "open", "--summary", s, "--discovered", t, *home,
                                          "--json"]).stdout)["id"] for s, t in (("one", soon), ("two", late))]
    r = runner.invoke(app, ["compliance", "breach", "close", ids[0], *home])
    assert isinstance(r.exception, InputError) and "no measures entry" in str(r.exception)
    r = runner.invoke(app, ["node", "status", *home, "--json"])
    assert r.exit_code == 0, r.output
    shown = {b["id"]: b for b in json.loads(r.stdout)["breaches"]}
    assert set(shown) == set(ids) and shown[ids[1]]["overdue"] and not shown[ids[0]]["overdue"]
    assert 16 < shown[ids[0]]["hours_left"] < 18
    r = runner.invoke(app, ["node", "status", *home])
    assert r.exit_code == 0 and "Open breaches" in r.output and "OVERDUE by 8.0 h" in r.output
    assert "17.0 h" in r.output or "16.9 h" in r.output


def test_report_marks_what_is_missing_and_shows_the_record(sqlite_node: Node) -> None:
    node = sqlite_node
    bid = breach.open_breach(node, "Unencrypted USB stick lost", discovered=DISCOVERED, approx_subjects=40,
                             approx_records=120, now=NOW)["id"]
    page = " ".join(breach_report.render_html(breach_report.report(node, bid, NOW)).split())
    assert "MISSING: contact point (incisive compliance contact set" in page
    assert "not yet assessed" in page and "none recorded yet" in page and "21.0 h left" in page
    assert "Data subjects (estimate, outside the catalogue)</th><td>40" in page
    assert "Records (estimate, outside the catalogue)</th><td>120" in page
    store.set_field(node.home, "controller-name", "Test Hospital Foundation")
    store.set_field(node.home, "controller-address", "1 Hospital Road, Berlin")
    store.set_field(node.home, "supervisory-authority", "Berliner Beauftragte für Datenschutz")
    late = DISCOVERED + timedelta(hours=90)
    page = " ".join(breach_report.render_html(breach_report.report(node, bid, late)).split())
    assert "Test Hospital Foundation" in page and "1 Hospital Road, Berlin" in page
    assert "Berliner Beauftragte für Datenschutz" in page
    assert "OVERDUE: the authority has not been notified" in page
    assert "MISSING: the notification is late and no reason is recorded" in page
    with pytest.raises(InputError, match=r"expected a \.pdf file name"):
        breach_report.write(breach_report.report(node, bid), pdf_out=node.home / "report.txt")

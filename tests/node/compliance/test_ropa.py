"""The Art. 30 record, generated from a real node with the synthetic cohort (SQLite and PostgreSQL): categories and
counts from the catalogue, purposes from the node policy and the audit chain, recipients from the audit chain
(only jobs answered ok), transfers, retention, every measure with its live evidence, the facts only a person can
give marked missing until recorded; no PHI in the record."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from incisive.cli.compliance import app
from incisive.common.audit_log import NodeAudit
from incisive.node.backup import config as backup_config
from incisive.node.backup import health
from incisive.node.catalogue import queries
from incisive.node.compliance import measures, processors, store
from incisive.node.compliance.ropa import FORMAT, build_ropa
from incisive.node.home import Node
from incisive.node.policy import Policy, save_policy
from tests.node.compliance import complete_record, fill, make_pdf
from tests.node.test_phi_scan import _needles

runner = CliRunner()


def by_id(record: dict[str, object]) -> dict[str, dict[str, object]]:
    return {m["id"]: m for m in record["measures"]}  # type: ignore[attr-defined, index]


def test_record_from_the_catalogue(node: Node, cohort: Path) -> None:
    fill(node, cohort)
    r = build_ropa(node)
    with node.catalogue.session() as s:
        stats = queries.stats(s)
    assert r["format"] == FORMAT and r["node"]["id"] == node.settings.node_id
    assert r["data_subjects"]["patients"] == stats["patients"] == 10
    assert r["data_subjects"]["clinical_records"] == 10
    img = r["personal_data"]["imaging"]
    assert img["modalities"] == stats["by_modality"] and {m["modality"] for m in img["modalities"]} == {"CT", "MR",
                                                                                                         "MG"}
    assert sum(img["body_parts"].values()) == stats["series"] and img["quarantined"] == stats["quarantined"] > 0
    assert {"diagnosis", "cancer_type", "stage", "diagnosis_date"} <= set(r["personal_data"]["clinical_fields"])
    assert "patient_name" not in r["personal_data"]["clinical_fields"]  # dropped at import: never held
    assert r["personal_data"]["labels"] == {"lesion": 10}
    categories = {c["category"]: c for c in r["personal_data"]["categories"]}
    assert categories["medical images (DICOM, de-identified per PS3.15)"]["count"] == stats["instances"]
    assert categories["clinical data (pseudonymised)"]["count"] == 10
    assert "Art. 9(1)" in r["personal_data"]["special_categories"]
    # the record is JSON and holds no PHI of the cohort
    text = json.dumps(r).encode()
    assert not [n for n in _needles(cohort) if n in text]


def test_missing_until_recorded(sqlite_node: Node) -> None:
    r = build_ropa(sqlite_node)
    assert r["missing"] == ["contact", "dpo", "controller-name", "controller-address", "legal-basis",
                            "retention-years", "node-country"]
    assert r["controller"] == {"name": None, "address": None} and r["contact"] is None
    complete_record(sqlite_node.home)
    store.set_field(sqlite_node.home, "purposes-extra", "teaching with anonymous aggregates")
    r = build_ropa(sqlite_node)
    assert r["missing"] == [] and r["controller"]["name"] == "Test Hospital Foundation"
    assert r["legal_basis"].startswith("Art. 6(1)(e)") and r["retention"]["years"] == 10
    assert r["dpo"] == {"name": "Dora Protect", "email": "dpo@hospital.example"}
    assert r["purposes"]["extra"] == "teaching with anonymous aggregates"


def test_purposes_and_recipients_from_policy_and_audit(sqlite_node: Node) -> None:
    save_policy(sqlite_node.home, Policy(job_types=["count", "fl-supernode"], projects=["lung-ai"]))
    audit = NodeAudit(sqlite_node.home)
    audit.append("researcher:rita", "job.count", target="j1", details={"query": {"project": "lung-ai"}})
    audit.append("researcher:rita", "job.fl-supernode", target="j2", details={"query": {"project": "lung-ai"}})
    audit.append("researcher:sam", "job.count", target="j3", outcome="refused")  # got nothing
    audit.append("researcher:tom", "job.summary", target="j4", outcome="error")
    audit.append("local", "policy.set")
    r = build_ropa(sqlite_node)
    assert r["purposes"]["job_types"] == ["count", "fl-supernode"] and r["purposes"]["projects_allowed"] == [
        "lung-ai"]
    assert r["purposes"]["projects_seen"] == ["lung-ai"]
    assert any("federated training" in a for a in r["purposes"]["activities"])
    assert not any("inference" in a for a in r["purposes"]["activities"])
    recipients = {x["recipient"]: x for x in r["recipients"]}
    assert set(recipients) == {"platform", "researcher:rita"}
    assert recipients["researcher:rita"]["jobs"] == 2
    assert recipients["researcher:rita"]["job_types"] == ["count", "fl-supernode"]
    assert recipients["platform"]["jobs"] == 2


def test_processors_transfers_retention(sqlite_node: Node, tmp_path: Path) -> None:
    complete_record(sqlite_node.home)
    processors.add_processor(sqlite_node.home, "CloudCo Inc", "hosting", "US", "2026-01-10",
                             make_pdf(tmp_path / "dpa.pdf"), checklist=["all=yes"])
    drive = tmp_path / "drive"
    drive.mkdir()
    backup_config.add_target(sqlite_node.home, "usb", str(drive))
    store.set_backup_location(sqlite_node.home, "usb", "DE")
    store.set_field(sqlite_node.home, "recipients-extra", "the hospital's tumour board (aggregates)")
    r = build_ropa(sqlite_node)
    roles = {x["recipient"]: x["role"] for x in r["recipients"]}
    assert roles["CloudCo Inc"] == "processor: hosting (US)"
    assert roles["the hospital's tumour board (aggregates)"] == "recorded by the controller"
    assert r["processors"][0]["id"] == "cloudco-inc" and not r["processors"][0]["eu_eea"]
    t = r["transfers"]
    assert t["node"]["status"] == "eu_eea" and t["backup_targets"][0]["status"] == "eu_eea"
    assert [x["subject"] for x in t["transfers"]] == ["CloudCo Inc"] and "Art. 46(2)(c)" in t["transfers"][0][
        "safeguard"]
    assert r["retention"]["backup"] == {"every_days": 14, "keep_last": 6, "keep_monthly": 12, "targets": 1}


def test_measures_with_live_evidence(sqlite_node: Node, tmp_path: Path) -> None:
    m = by_id(build_ropa(sqlite_node))
    assert list(m) == ["pseudonymisation", "encryption", "backup", "raid", "audit", "readiness", "access", "link",
                       "disclosure"]
    assert m["pseudonymisation"]["status"] == "ok"
    details = m["pseudonymisation"]["details"]
    assert details["door"] == "deidentify" and details["sr_keep_text"] is False  # type: ignore[index]
    assert details["quarantine_modalities"] == sqlite_node.settings.quarantine_modalities  # type: ignore[index]
    assert details["actions"]["removed"] > 100 and details["retained_attributes"] > 10  # type: ignore[index]
    assert m["encryption"]["status"] == "warn" and "not encrypted by incisive" in str(m["encryption"]["evidence"])
    assert m["backup"]["status"] == "fail" and m["audit"]["status"] == "ok"
    assert m["readiness"]["status"] == "warn" and "not recorded" in str(m["readiness"]["evidence"])
    assert m["link"]["status"] == "info" and m["access"]["details"]["tokens_by_role"] == {}  # type: ignore[index]

    from incisive.node.api.tokens import create_token
    create_token(sqlite_node, "uploader", "pacs")
    create_token(sqlite_node, "viewer", "reader")
    drive = tmp_path / "drive"
    drive.mkdir()
    backup_config.add_target(sqlite_node.home, "usb", str(drive))
    health.record_verified(sqlite_node.home, "usb", "snap-1", health._now().isoformat(), full=True)
    NodeAudit(sqlite_node.home).append("local", "policy.set")
    report = measures.run_readiness(sqlite_node)
    m = by_id(build_ropa(sqlite_node))
    assert m["access"]["details"]["tokens_by_role"] == {"uploader": 1, "viewer": 1}  # type: ignore[index]
    assert m["backup"]["status"] == "ok" and "0.0 days old" in str(m["backup"]["evidence"])
    assert m["audit"]["details"]["entries"] == 1  # type: ignore[index]
    assert report["profile"] in str(m["readiness"]["evidence"])
    assert measures.last_readiness(sqlite_node) == report


def test_cli_json_and_summary(sqlite_node: Node) -> None:
    r = runner.invoke(app, ["ropa", "--home", str(sqlite_node.home), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["format"] == FORMAT
    r = runner.invoke(app, ["ropa", "--home", str(sqlite_node.home)])
    assert r.exit_code == 0 and "missing: contact, dpo" in r.output

"""``incisive compliance check``: every finding, exactly.

The must-show case (issue 20): a node with data, a processor outside the EU without SCC, a backup target in the
US and an open breach fails with exactly those three findings (every asked-once fact recorded first, so nothing
else is found); once each is fixed it passes. On SQLite and PostgreSQL, through the library and the CLI. Also:
what an empty node is missing, an unrecorded backup location, a broken audit chain, hook findings given as
mappings, and a Central Node tenant judged by its Central Node's country and safeguards.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from incisive.central.home import Central
from incisive.central.tenants import add_tenant
from incisive.cli.compliance import app
from incisive.common.fsio import atomic_write_text
from incisive.node.backup import config as backup_config
from incisive.node.compliance import breach, processors, store
from incisive.node.compliance.check import Finding, failing, findings
from incisive.node.home import Node
from tests.node.compliance import complete_record, fill, make_pdf

runner = CliRunner()


def found(node: Node) -> list[tuple[str, str, str]]:
    return [(f.code, f.severity, f.subject) for f in findings(node)]


def cli_check(node: Node) -> tuple[int, dict[str, object]]:
    r = runner.invoke(app, ["check", "--home", str(node.home), "--json"])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    return r.exit_code, json.loads(r.stdout)


def test_must_show_exactly_these_findings_then_pass(node: Node, cohort: Path, tmp_path: Path) -> None:
    fill(node, cohort)
    complete_record(node.home)
    drive = tmp_path / "drive"
    drive.mkdir()
    backup_config.add_target(node.home, "offsite", str(drive))
    store.set_backup_location(node.home, "offsite", "US")
    processors.add_processor(node.home, "CloudCo Inc", "hosting", "US", "2026-01-10",
                             make_pdf(tmp_path / "dpa.pdf", "dpa"), checklist=["all=yes"])
    record = breach.open_breach(node, "Backup disk lost in transit",
                                discovered=datetime.now(UTC) - timedelta(hours=2))
    bid = record["id"]

    assert found(node) == [("processor.non_eu_without_scc", "fail", "CloudCo Inc"),
                           ("residency.backup_outside_eu", "fail", "offsite"),
                           ("breach.open", "fail", bid)]
    code, report = cli_check(node)
    assert code == 1 and report["failing"] == 3
    assert [f["code"] for f in report["findings"]] == [  # type: ignore[attr-defined]
        "processor.non_eu_without_scc", "residency.backup_outside_eu", "breach.open"]
    r = runner.invoke(app, ["check", "--home", str(node.home)])
    assert r.exit_code == 1 and "3 failing" in r.output and "CloudCo Inc" in r.output

    # fix each: SCC + TIA for the processor, the backup target back in the EU, the breach closed with measures
    r = runner.invoke(app, ["processor", "update", "cloudco-inc", "--scc", "--tia",
                            str(make_pdf(tmp_path / "tia.pdf", "tia")), "--home", str(node.home)])
    assert r.exit_code == 0, r.output
    assert [f[0] for f in found(node)] == ["residency.backup_outside_eu", "breach.open"]
    r = runner.invoke(app, ["set", "backup-location", "offsite", "DE", "--home", str(node.home)])
    assert r.exit_code == 0, r.output
    breach.close_breach(node, bid, measures="Disk was encrypted (restic); the key was not with it; courier changed")
    assert found(node) == []
    code, report = cli_check(node)
    assert code == 0 and report == {"findings": [], "failing": 0}
    r = runner.invoke(app, ["check", "--home", str(node.home)])
    assert r.exit_code == 0 and "no findings" in r.output


def test_empty_node_lists_what_only_a_person_can_give(sqlite_node: Node) -> None:
    assert found(sqlite_node) == [("contact.missing", "fail", "contact"), ("dpo.missing", "fail", "dpo")] + [
        ("field.missing", "fail", key) for key in ("controller-name", "controller-address", "legal-basis",
                                                   "retention-years", "node-country")]
    for f in findings(sqlite_node):
        assert f.fix.startswith("incisive compliance")
    runner.invoke(app, ["contact", "set", "--name", "Ann", "--email", "ann@hospital.example", "--role",
                        "technical contact", "--dpo-name", "Dora", "--dpo-email", "dpo@hospital.example", "--home",
                        str(sqlite_node.home)])
    for key, value in (("controller-name", "Test Hospital Foundation"), ("controller-address", "Berlin"),
                       ("legal-basis", "Art. 6(1)(e), Art. 9(2)(j)"), ("retention-years", "10"),
                       ("node-country", "no")):
        r = runner.invoke(app, ["set", key, value, "--home", str(sqlite_node.home)])
        assert r.exit_code == 0, r.output
    assert found(sqlite_node) == []
    r = runner.invoke(app, ["show", "--home", str(sqlite_node.home), "--json"])
    assert json.loads(r.stdout)["missing"] == [] and json.loads(r.stdout)["node_country"] == "NO"


def test_node_outside_the_eu_and_unrecorded_backup(sqlite_node: Node, tmp_path: Path) -> None:
    complete_record(sqlite_node.home, country="CH")
    drive = tmp_path / "usb"
    drive.mkdir()
    backup_config.add_target(sqlite_node.home, "usb", str(drive))
    assert found(sqlite_node) == [("residency.node_outside_eu", "fail", sqlite_node.settings.node_id),
                                  ("residency.backup_location_missing", "fail", "usb")]
    store.set_field(sqlite_node.home, "node-country", "AT")
    store.set_backup_location(sqlite_node.home, "usb", "AT")
    assert found(sqlite_node) == []


def test_backup_abroad_kept_by_a_safeguarded_processor(sqlite_node: Node, tmp_path: Path) -> None:
    complete_record(sqlite_node.home)
    processors.add_processor(sqlite_node.home, "Vault Corp", "off-site backup", "US", "2026-03-01",
                             make_pdf(tmp_path / "dpa.pdf"), scc=True, tia=make_pdf(tmp_path / "tia.pdf", "t"),
                             checklist=["all=yes"])
    store.set_backup_location(sqlite_node.home, "vault", "US")
    assert found(sqlite_node) == [("residency.backup_outside_eu", "fail", "vault")]
    r = runner.invoke(app, ["set", "backup-location", "vault", "US", "--processor", "vault-corp", "--home",
                            str(sqlite_node.home)])
    assert r.exit_code == 0, r.output
    assert found(sqlite_node) == []


def test_broken_audit_chain_is_a_finding(sqlite_node: Node) -> None:
    from incisive.common.audit_log import NodeAudit

    complete_record(sqlite_node.home)
    audit = NodeAudit(sqlite_node.home)
    audit.append("researcher:rita", "job.count", target="j1")
    audit.append("researcher:rita", "job.count", target="j2")
    lines = audit.path.read_text().splitlines()
    audit.path.write_text(lines[0].replace("j1", "j9") + "\n" + lines[1] + "\n")
    assert [f[0] for f in found(sqlite_node)] == ["audit.chain_broken"]


def test_hook_findings_as_mappings() -> None:
    f = Finding.of({"code": "subject.erase_unfinished", "subject": "er-1", "message": "m", "fix": "x",
                    "severity": "panic"})
    assert f == Finding("subject.erase_unfinished", "fail", "er-1", "m", "x")
    assert failing([f, Finding("a", "warn", "", "", "")]) == [f]


@pytest.fixture
def us_central(tmp_path: Path) -> Central:
    central = Central.init(tmp_path / "central", country="US", provider="Hosting Inc", region="us-east")
    yield central  # type: ignore[misc]
    central.close()


def test_central_node_tenant_judged_by_its_central_node(us_central: Central, tmp_path: Path) -> None:
    record, _ = add_tenant(us_central, "Hospital D", "IT", "IT lead <it@hospital-d.example>")
    tenant = us_central.tenant_node(record.id)
    complete_record(tenant.home, country="DE")  # a tenant's own node-country does not count: the machine's does
    assert found(tenant) == [("processor.central_operator_missing", "fail", "Hosting Inc"),
                             ("residency.node_outside_eu", "fail", tenant.settings.node_id)]
    processors.add_processor(tenant.home, "Hosting Inc", "Central Node hosting", "US", "2026-02-01",
                             make_pdf(tmp_path / "dpa.pdf"), scc=True, tia=make_pdf(tmp_path / "tia.pdf", "tia"),
                             checklist=["all=yes"])
    assert found(tenant) == [("residency.node_outside_eu", "fail", tenant.settings.node_id)]
    r = runner.invoke(app, ["residency", "--home", str(tenant.home), "--json"])
    node_row = json.loads(r.stdout)["node"]
    assert node_row["country"] == "US" and node_row["source"].startswith("central.toml")
    assert json.loads(r.stdout)["central_operator"] == "Hosting Inc"
    drive = tmp_path / "drive"
    drive.mkdir()
    backup_config.add_target(tenant.home, "offsite", str(drive))
    assert found(tenant) == [("residency.node_outside_eu", "fail", tenant.settings.node_id),
                             ("residency.backup_location_missing", "fail", "offsite")]
    make_pdf(us_central.dir / "tia.pdf", "central tia")
    settings = us_central.settings.model_copy(update={"transfer_scc": True, "transfer_tia": "tia.pdf",
                                                      "backup_locations": {"offsite": "US"}})
    atomic_write_text(us_central.dir / "central.toml", settings.to_toml())
    assert found(tenant) == [("residency.backup_outside_eu", "fail", "offsite")]  # central.toml's location
    store.set_backup_location(tenant.home, "offsite", "DE")  # the tenant's own record wins
    assert found(tenant) == []
    assert store.missing_fields(store.load(tenant.home), tenant=True) == []

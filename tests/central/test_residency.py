"""``central check``: the hosting country and every backup target's against the EU/EEA, with the transfer
safeguards a location outside it needs (and the warning that keys stay in the EU/EEA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from incisive.central.home import Central
from incisive.central.residency import EU, EU_EEA, check_residency
from incisive.central.tenants import add_tenant
from incisive.cli.central import app
from incisive.node.backup.config import add_target
from incisive.node.check.model import Verdict

runner = CliRunner()


def configure(central: Central, **values: Any) -> Central:
    settings = central.settings.model_copy(update=values)
    (central.dir / "central.toml").write_text(settings.to_toml())
    return Central.open(central.dir)


def verdicts(central: Central) -> dict[str, Verdict]:
    return {row.id: row.verdict for row in check_residency(central).rows}


def test_country_lists() -> None:
    assert len(EU) == 27 and len(EU_EEA) == 30 and {"IS", "LI", "NO"} < EU_EEA
    assert not {"GB", "CH", "US"} & EU_EEA


def test_eu_hosting_passes(central: Central) -> None:
    report = check_residency(central)
    assert {r.id: r.verdict for r in report.rows} == {"residency.hosting": Verdict.PASS,
                                                      "residency.keys": Verdict.PASS}
    assert report.exit_code == 0 and report.to_dict()["summary"]["exit_code"] == 0


def test_outside_the_eu_needs_scc_and_a_tia_inside_the_central_dir(central: Central, tmp_path: Path) -> None:
    c = configure(central, country="US")
    assert verdicts(c)["residency.hosting"] is Verdict.FAIL and check_residency(c).exit_code == 2
    c = configure(c, transfer_scc=True)
    row = check_residency(c).rows[0]
    assert row.verdict is Verdict.FAIL and row.fix and "transfer_tia" in row.fix
    (tmp_path / "tia.pdf").write_text("assessment")
    c = configure(c, transfer_tia=str(tmp_path / "tia.pdf"))  # outside the central directory: not accepted
    assert verdicts(c)["residency.hosting"] is Verdict.FAIL
    c = configure(c, transfer_tia="docs/missing.pdf")
    assert verdicts(c)["residency.hosting"] is Verdict.FAIL
    (c.dir / "docs").mkdir()
    (c.dir / "docs" / "tia.pdf").write_text("assessment")
    c = configure(c, transfer_tia="docs/tia.pdf")
    report = check_residency(c)
    rows = {r.id: r for r in report.rows}
    assert rows["residency.hosting"].verdict is Verdict.WARN
    assert rows["residency.keys"].verdict is Verdict.WARN and "EU/EEA" in (rows["residency.keys"].fix or "")
    assert report.exit_code == 1


def test_backup_targets_need_a_recorded_location(central: Central, tmp_path: Path) -> None:
    record, _ = add_tenant(central, "Hospital D", "IT", "x")
    (tmp_path / "nas").mkdir()
    add_target(central.tenant_dir(record.id), "nas", str(tmp_path / "nas"))
    assert verdicts(central)["residency.backup.nas"] is Verdict.FAIL
    c = configure(central, backup_locations={"nas": "NO"})
    assert verdicts(c)["residency.backup.nas"] is Verdict.PASS and check_residency(c).exit_code == 0
    c = configure(c, backup_locations={"nas": "CH", "offsite": "DE"})
    v = verdicts(c)
    assert v["residency.backup.nas"] is Verdict.FAIL and v["residency.backup.offsite"] is Verdict.PASS
    (c.dir / "tia.md").write_text("assessment")
    c = configure(c, transfer_scc=True, transfer_tia="tia.md")
    v = verdicts(c)
    assert v["residency.backup.nas"] is Verdict.WARN and v["residency.keys"] is Verdict.WARN
    assert v["residency.hosting"] is Verdict.PASS


@pytest.mark.parametrize(("country", "code"), [("DE", 0), ("US", 2)])
def test_cli_check(central: Central, country: str, code: int) -> None:
    configure(central, country=country)
    r = runner.invoke(app, ["check", "--json", "--central", str(central.dir)])
    assert r.exit_code == code, r.output
    data = json.loads(r.stdout)
    assert data["format"] == "incisive-node-check/1" and data["summary"]["exit_code"] == code
    assert data["areas"] == ["residency"]
    r = runner.invoke(app, ["check", "--central", str(central.dir)])
    assert r.exit_code == code and "Hosting country" in r.stdout

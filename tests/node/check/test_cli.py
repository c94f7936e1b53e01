"""``incisive node check`` end to end: exit codes, --json against the published schema, --only, --report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

import incisive.cli.check as check_cli
from incisive.cli import app
from incisive.common.errors import InputError
from incisive.node.check.recorded import RecordedSystem
from incisive.node.check.render import SCHEMA_PATH, load_schema

from .conftest import FIXTURES, HOSTS, STORES, check_host

runner = CliRunner()


@pytest.fixture
def replay(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the command read a recorded machine instead of this one."""

    def use(host: str) -> list[str]:
        monkeypatch.setattr(check_cli, "LiveSystem", lambda: RecordedSystem(FIXTURES / host))
        monkeypatch.delenv("INCISIVE_PLATFORM_URL", raising=False)
        return ["node", "check", "--store", STORES.get(host, "/var/lib/incisive")]

    return use


def validate(document: dict[str, Any]) -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)


@pytest.mark.parametrize(("host", "code"), [("workstation", 1), ("vm", 1), ("laptop", 2), ("windows", 2),
                                            ("server-nogpu", 2)])
def test_json_output_validates_and_sets_exit_code(replay: Any, host: str, code: int) -> None:
    result = runner.invoke(app, [*replay(host), "--json"])
    assert result.exit_code == code, result.output
    document = json.loads(result.stdout)
    validate(document)
    assert document["summary"]["exit_code"] == code
    assert document["profile"] == "node-spec-1.1"
    assert len(document["rows"]) == sum(document["summary"][v] for v in ("pass", "warn", "fail", "unknown", "manual"))


def test_schema_is_published_in_the_repository() -> None:
    assert SCHEMA_PATH.is_file()
    assert load_schema()["$id"] == check_host("vm").to_dict()["$schema"]


def test_schema_rejects_a_non_pass_row_without_fix() -> None:
    document = check_host("laptop").to_dict()
    document["rows"][0]["fix"] = None
    with pytest.raises(jsonschema.ValidationError):
        validate(document)


def test_exit_zero_with_only(replay: Any) -> None:
    result = runner.invoke(app, [*replay("workstation"), "--only", "cpu,gpu,storage", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    validate(document)
    assert document["areas"] == ["cpu", "storage", "gpu"]
    assert {row["area"] for row in document["rows"]} == {"cpu", "storage", "gpu"}


def test_only_accepts_aliases_and_rejects_unknown_areas(replay: Any) -> None:
    result = runner.invoke(app, [*replay("server-nogpu"), "--only", "ram, backup", "--json"])
    assert {row["area"] for row in json.loads(result.stdout)["rows"]} == {"memory", "redundancy"}
    assert result.exit_code == 2  # the degraded RAID
    bad = runner.invoke(app, [*replay("vm"), "--only", "cpu,toaster"])
    assert isinstance(bad.exception, InputError)
    assert "toaster" in str(bad.exception)


def test_profiles_on_the_command_line(replay: Any) -> None:
    result = runner.invoke(app, [*replay("laptop"), "--profile", "demo", "--json"])
    document = json.loads(result.stdout)
    validate(document)
    assert document["profile"] == "demo"
    bad = runner.invoke(app, [*replay("laptop"), "--profile", "node-spec-9"])
    assert isinstance(bad.exception, InputError)


def test_table_output(replay: Any) -> None:
    result = runner.invoke(app, [*replay("server-nogpu")], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "Node readiness: srv-pacs-gw vs node-spec-1.1" in result.stdout
    assert "exit 2 (failures found)" in result.stdout
    assert "degraded" in result.stdout


@pytest.mark.parametrize("suffix", ["html", "md"])
def test_report_file(replay: Any, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"readiness.{suffix}"
    result = runner.invoke(app, [*replay("laptop"), "--report", str(out), "--json"])
    assert result.exit_code == 2
    json.loads(result.stdout)  # stdout stays pure JSON with --report
    text = out.read_text()
    assert "dr-laptop" in text and "exit 2: failures found" in text
    if suffix == "html":
        assert all(f'id="{row.id}"' in text for row in check_host("laptop").rows)
    if suffix == "html":
        assert text.startswith("<!doctype html>")
        assert '<td class="verdict fail">fail</td>' in text
    else:
        assert "| Area | Requirement | Measured | Verdict | How to fix |" in text
        assert "| Network | wired link (not wireless) ≥ 100 Mbps | wireless only (wlp0s20f3) | **fail** |" in text


def test_report_rejects_unknown_suffix(replay: Any, tmp_path: Path) -> None:
    result = runner.invoke(app, [*replay("vm"), "--report", str(tmp_path / "r.pdf")])
    assert isinstance(result.exception, InputError)


def test_html_escapes_measured_values(tmp_path: Path) -> None:
    from incisive.node.check.render import render_document

    report = check_host("vm")
    report.host = "<script>alert(1)</script>"
    html = render_document(report, "html")
    assert "<script>" not in html and "&lt;script&gt;" in html


@pytest.mark.parametrize("host", HOSTS)
def test_every_fixture_runs_fast(host: str) -> None:
    assert check_host(host).duration_s < 1.0


def test_live_run_on_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this machine is, the real check completes, validates and answers within 5 s."""
    monkeypatch.delenv("INCISIVE_PLATFORM_URL", raising=False)
    out = tmp_path / "live.html"
    started = time.monotonic()
    result = runner.invoke(app, ["node", "check", "--json", "--store", str(tmp_path), "--report", str(out)])
    elapsed = time.monotonic() - started
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 1, 2), result.output
    document = json.loads(result.stdout)
    validate(document)
    assert document["summary"]["exit_code"] == result.exit_code
    assert elapsed < 5.0, f"live check took {elapsed:.1f} s"
    assert out.is_file()

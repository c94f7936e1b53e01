"""The processor register (Art. 28) with its Art. 28(3) checklist: add, update, remove, list; documents filed with
their sha256; bad input (unknown country, future date, fake PDF, symlink, directory, missing file, unknown checklist
item, duplicate name) refused with nothing changed; the findings of each record; the CLI, in process and as the
installed command (exit code and message)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from incisive.cli.compliance import app
from incisive.common.errors import InputError
from incisive.node.compliance import processors, store
from incisive.node.home import Node
from tests.node.compliance import make_pdf

runner = CliRunner()
ALL_YES = ["all=yes"]


def codes(node: Node, entry_id: str) -> list[str]:
    entry = processors.get_processor(store.load(node.home), entry_id)
    return [code for code, _, _ in processors.problems(node.home, entry)]


def test_add_files_documents_and_lists(sqlite_node: Node, tmp_path: Path) -> None:
    dpa, tia = make_pdf(tmp_path / "dpa.pdf", "dpa"), make_pdf(tmp_path / "tia.pdf", "tia")
    entry = processors.add_processor(sqlite_node.home, "CloudCo GmbH", "hosting", "de", "2026-01-10", dpa,
                                     tia=tia, checklist=ALL_YES)
    assert entry["id"] == "cloudco-gmbh" and entry["country"] == "DE" and entry["dpa_signed"] == "2026-01-10"
    assert [d["kind"] for d in entry["documents"]] == ["dpa", "tia"]
    assert entry["documents"][0]["sha256"] == hashlib.sha256(dpa.read_bytes()).hexdigest()
    for doc in entry["documents"]:
        assert store.document_path(sqlite_node.home, doc).read_bytes() in (dpa.read_bytes(), tia.read_bytes())
    (row,) = processors.list_processors(sqlite_node.home)
    assert row["eu_eea"] and row["has_dpa"] and row["has_tia"] and row["checklist_missing"] == []
    assert codes(sqlite_node, "cloudco-gmbh") == []
    second = processors.add_processor(sqlite_node.home, "CloudCo GmbH & Co", "backup", "AT", "2026-02-01", dpa,
                                      checklist=ALL_YES)
    assert second["id"] == "cloudco-gmbh-co"
    assert processors.get_processor(store.load(sqlite_node.home), "CloudCo GmbH")["id"] == "cloudco-gmbh"


def test_checklist() -> None:
    assert processors.parse_checklist([]) == dict.fromkeys(processors.CHECKLIST, False)
    full = processors.parse_checklist(["all=yes", "audits=no", "sub-processors=no"])
    assert [k for k, v in full.items() if not v] == ["sub_processors", "audits"]
    assert processors.parse_checklist(["audits=yes"], full)["audits"]
    assert len(processors.CHECKLIST) == 13
    for bad, match in [(["audits"], "ITEM=yes or ITEM=no"), (["audits=maybe"], "ITEM=yes"),
                       (["colour=yes"], "unknown item 'colour'")]:
        with pytest.raises(InputError, match=match):
            processors.parse_checklist(bad)


def test_bad_input_refused_nothing_changed(sqlite_node: Node, tmp_path: Path) -> None:
    dpa = make_pdf(tmp_path / "dpa.pdf")
    processors.add_processor(sqlite_node.home, "CloudCo GmbH", "hosting", "DE", "2026-01-10", dpa)
    fake = tmp_path / "fake.pdf"
    fake.write_bytes(b"PK\x03\x04 a zip, not a pdf")
    link = tmp_path / "link.pdf"
    link.symlink_to(dpa)
    directory = tmp_path / "dir.pdf"
    directory.mkdir()
    before = (store.compliance_dir(sqlite_node.home) / "compliance.json").read_bytes()
    files_before = sorted(os.listdir(store.compliance_dir(sqlite_node.home) / "documents"))
    base = {"name": "Other Co", "service": "backup", "country": "DE", "dpa_signed": "2026-01-10", "document": dpa}
    cases = [({"country": "XX"}, "not an ISO 3166-1 alpha-2"), ({"dpa_signed": "2999-01-01"}, "in the future"),
             ({"dpa_signed": "yesterday"}, "not a date"), ({"document": fake}, "no %PDF- header"),
             ({"document": link}, "symbolic link"), ({"document": directory}, "is a directory"),
             ({"document": tmp_path / "missing.pdf"}, "no such file"), ({"tia": fake}, "--tia: 'fake.pdf'"),
             ({"checklist": ["colour=yes"]}, "unknown item"), ({"name": "cloudco gmbh"}, "registered already"),
             ({"name": " "}, "must not be empty")]
    for change, match in cases:
        with pytest.raises(InputError, match=match):
            processors.add_processor(sqlite_node.home, **{**base, **change})  # type: ignore[arg-type]
    assert (store.compliance_dir(sqlite_node.home) / "compliance.json").read_bytes() == before
    assert sorted(os.listdir(store.compliance_dir(sqlite_node.home) / "documents")) == files_before
    with pytest.raises(InputError, match="no processor 'nobody'"):
        processors.update_processor(sqlite_node.home, "nobody", scc=True)


def test_findings_of_a_record(sqlite_node: Node, tmp_path: Path) -> None:
    dpa, tia = make_pdf(tmp_path / "dpa.pdf", "dpa"), make_pdf(tmp_path / "tia.pdf", "tia")
    processors.add_processor(sqlite_node.home, "CloudCo Inc", "hosting", "US", "2026-01-10", dpa,
                             checklist=["all=yes", "audits=no"])
    assert codes(sqlite_node, "cloudco-inc") == ["processor.checklist_incomplete", "processor.non_eu_without_scc"]
    processors.update_processor(sqlite_node.home, "cloudco-inc", scc=True, checklist=["audits=yes"])
    assert codes(sqlite_node, "cloudco-inc") == ["processor.non_eu_without_tia"]
    entry = processors.update_processor(sqlite_node.home, "cloudco-inc", tia=tia)
    assert codes(sqlite_node, "cloudco-inc") == [] and [d["kind"] for d in entry["documents"]] == ["dpa", "tia"]
    store.document_path(sqlite_node.home, entry["documents"][1]).write_bytes(b"%PDF-1.4 swapped")
    assert codes(sqlite_node, "cloudco-inc") == ["processor.document_missing"]
    new_tia = make_pdf(tmp_path / "tia2.pdf", "tia v2")
    entry = processors.update_processor(sqlite_node.home, "cloudco-inc", tia=new_tia)  # replaces the TIA
    assert [d["sha256"] for d in entry["documents"] if d["kind"] == "tia"] == [
        hashlib.sha256(new_tia.read_bytes()).hexdigest()]
    assert codes(sqlite_node, "cloudco-inc") == []
    store.set_backup_location(sqlite_node.home, "offsite", "US", processor="cloudco-inc")
    removed = processors.remove_processor(sqlite_node.home, "CloudCo Inc")
    assert removed["id"] == "cloudco-inc" and processors.list_processors(sqlite_node.home) == []
    assert store.load(sqlite_node.home)["backup_processors"] == {}
    assert store.document_path(sqlite_node.home, entry["documents"][0]).is_file()  # evidence stays filed


def test_cli_in_process(sqlite_node: Node, tmp_path: Path) -> None:
    home = ["--home", str(sqlite_node.home)]
    dpa = make_pdf(tmp_path / "dpa.pdf")
    r = runner.invoke(app, ["processor", "add", "CloudCo Inc", "--service", "hosting", "--country", "US",
                            "--dpa-signed", "2026-01-10", "--document", str(dpa), "--checklist", "all=yes",
                            "--checklist", "audits=no", *home, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["checklist"]["audits"] is False
    r = runner.invoke(app, ["processor", "ls", *home, "--json"])
    (row,) = json.loads(r.stdout)
    assert row["id"] == "cloudco-inc" and not row["eu_eea"] and row["checklist_missing"] == ["audits"]
    r = runner.invoke(app, ["processor", "ls", *home])
    assert r.exit_code == 0 and "cloudco-inc" in r.output
    tia = make_pdf(tmp_path / "tia.pdf", "tia")
    r = runner.invoke(app, ["processor", "update", "cloudco-inc", "--scc", "--tia", str(tia), "--checklist",
                            "audits=yes", *home])
    assert r.exit_code == 0, r.output
    assert codes(sqlite_node, "cloudco-inc") == []
    r = runner.invoke(app, ["processor", "add", "Bad Co", "--service", "x", "--country", "DE", "--dpa-signed",
                            "2026-01-10", "--document", str(tmp_path), *home])
    assert isinstance(r.exception, InputError) and "is a directory" in str(r.exception)
    r = runner.invoke(app, ["processor", "rm", "cloudco-inc", *home])
    assert r.exit_code == 0 and processors.list_processors(sqlite_node.home) == []


def test_installed_command_exit_code_and_message(sqlite_node: Node, tmp_path: Path) -> None:
    fake = tmp_path / "dpa.pdf"
    fake.write_text("I am a text file")
    incisive = Path(sys.executable).with_name("incisive")
    proc = subprocess.run([str(incisive), "compliance", "processor", "add", "CloudCo GmbH", "--service", "hosting",
                           "--country", "DE", "--dpa-signed", "2026-01-10", "--document", str(fake), "--home",
                           str(sqlite_node.home)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "not a PDF (no %PDF- header)" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([str(incisive), "compliance", "processor", "add", "CloudCo GmbH", "--service", "hosting",
                           "--country", "Mars", "--dpa-signed", "2026-01-10", "--document", str(fake), "--home",
                           str(sqlite_node.home)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not an ISO 3166-1 alpha-2" in proc.stderr
    assert processors.list_processors(sqlite_node.home) == []

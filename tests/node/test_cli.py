"""The data manager's commands end to end through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from incisive.cli import app

runner = CliRunner()


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_node_workflow(tmp_path: Path, cohort: Path, catalogue_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "node"
    info = json.loads(run("node", "init", str(home), "--provider", "Hôpital Test", "--catalogue-url", catalogue_url,
                          "--json"))
    assert info["node_id"] == "hopital-test" and Path(info["key_file"]).is_file()
    monkeypatch.setenv("INCISIVE_NODE", str(home))
    out = json.loads(run("node", "import", str(cohort / "dicom"), "--clinical", str(cohort / "clinical.csv"),
                         "--drop", "patient_name", "--workers", "1", "--json"))
    assert out["dicom"]["imported"] > 0 and out["dicom"]["rejected"] == 0 and out["clinical"]["records"] > 0
    stats = json.loads(run("node", "stats", "--json"))
    assert stats["instances"] == out["dicom"]["imported"]
    series = json.loads(run("node", "ls", "series", "--modality", "MR", "--json"))
    assert series and {s["modality"] for s in series} == {"MR"}
    studies = json.loads(run("node", "ls", "studies", "--json"))
    assert len(studies) == stats["studies"]
    assert "Node contents" in run("node", "stats")
    quality = json.loads(run("node", "quality", "--json", "--html", str(tmp_path / "q.html")))
    assert quality["cohort"]["instances"] == stats["instances"] and (tmp_path / "q.html").stat().st_size > 500
    assert json.loads(run("node", "fsck", "--json"))["clean"] is True
    victim = next((home / "store" / "objects").rglob("*"))
    while victim.is_dir():
        victim = next(victim.iterdir())
    victim.write_bytes(victim.read_bytes()[:-1])  # truncated object
    assert json.loads(run("node", "fsck", "--json", code=1))["corrupt"] == [victim.name]


def test_errors_are_clear_and_phi_free(tmp_path: Path, cohort: Path) -> None:
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "incisive", *args], capture_output=True, text=True, env=env,
                              timeout=120, check=False)

    missing = cli("node", "stats", "--home", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "not an incisive node" in missing.stderr and "Traceback" not in missing.stderr
    bad_db = cli("node", "init", str(tmp_path / "n"), "--provider", "A", "--catalogue-url",
                 "postgresql+psycopg://bob:hunter2@127.0.0.1:1/x")
    assert bad_db.returncode == 3 and "hunter2" not in bad_db.stderr and "127.0.0.1:1" in bad_db.stderr
    assert cli("node", "init", str(tmp_path / "ok"), "--provider", "A").returncode == 0
    refused = cli("node", "import", str(cohort / "dicom"), "--clinical", str(cohort / "clinical.csv"),
                  "--home", str(tmp_path / "ok"))
    assert refused.returncode == 2 and "patient_name" in refused.stderr
    names = json.loads((cohort / "phi_manifest.json").read_text())
    assert not [n for n in names if len(n) >= 4 and n in refused.stderr + refused.stdout]
    assert not list((tmp_path / "ok" / "store" / "objects").iterdir())  # refused before any DICOM was stored
    nothing = cli("node", "import", "--home", str(tmp_path / "ok"))
    assert nothing.returncode == 2 and "give a DICOM folder" in nothing.stderr


def test_import_summary_and_quality_count_removals_beyond_the_table(tmp_path: Path) -> None:
    """Issue 12: the folder-import summary and `node quality` show fail-closed removals by keyword, never values."""
    from tests.node.deid.samples import report, to_bytes

    folder = tmp_path / "in"
    folder.mkdir()
    ds = report()
    ds.add_new(0x00140104, "PN", "Reviewer^Second")
    (folder / "sr.dcm").write_bytes(to_bytes(ds))
    home = tmp_path / "node"
    run("node", "init", str(home), "--provider", "Hospital A")
    out = json.loads(run("node", "import", str(folder), "--home", str(home), "--workers", "1", "--json"))
    assert out["dicom"]["imported"] == 1
    assert out["dicom"]["removed_beyond_table"] == {"SecondaryReviewerName": 1, "TextValue": 1}
    text = run("node", "import", str(folder), "--home", str(home), "--workers", "1")  # duplicate: nothing new
    assert "Removed beyond Table E.1-1" not in text
    quality = json.loads(run("node", "quality", "--home", str(home), "--json"))
    assert quality["removed_beyond_table"] == {"SecondaryReviewerName": 1, "TextValue": 1}
    shown = run("node", "quality", "--home", str(home))
    assert "SecondaryReviewerName" in shown and "Reviewer" not in shown.replace("SecondaryReviewerName", "")

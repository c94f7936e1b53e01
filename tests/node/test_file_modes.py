"""File modes and paths (issue 16 item 6), through the real CLI: node and platform directories 0700 and every file
0600 (catalogue, SQLite -wal/-shm, logs, state, keys), and ``node import`` prints nothing derived from source
paths, which can carry a patient's name and MRN."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pydicom

from tests.node.net.conftest import PYDICOM_FILES

NAME, MRN = "Doe^Jane", "12345678"
FOLDER = f"{NAME}_MRN{MRN}"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "incisive", *args], capture_output=True, text=True, timeout=300,
                          env=env, preexec_fn=lambda: os.umask(0o022))  # the usual umask of a login shell


def _loose(root: Path) -> list[str]:
    """Paths under ``root`` (itself included) that group or others can read, write or enter."""
    out = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if not path.is_symlink() and mode & 0o077:
            out.append(f"{path.relative_to(root.parent)} {oct(mode)}")
    return out


def test_node_and_platform_files_are_private(tmp_path: Path) -> None:
    home = tmp_path / "node"
    assert _cli("node", "init", str(home), "--provider", "Modes Hospital").returncode == 0
    src = tmp_path / "in" / FOLDER
    src.mkdir(parents=True)
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", src / f"{NAME}_1.dcm")
    r = _cli("node", "import", str(tmp_path / "in"), "--home", str(home))
    assert r.returncode == 0, r.stderr
    open_db = subprocess.Popen([sys.executable, "-c", "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1]);"
                                "c.execute('pragma journal_mode=wal'); c.execute('select 1 from alembic_version')"
                                ".fetchall(); print('open', flush=True); time.sleep(60)", str(home / "catalogue.db")],
                               stdout=subprocess.PIPE, text=True)
    try:  # while a connection is open, -wal and -shm exist: they take the database's mode
        assert open_db.stdout is not None and open_db.stdout.readline().strip() == "open"
        assert (home / "catalogue.db-shm").exists()
        assert _loose(home) == []
    finally:
        open_db.kill()
        open_db.wait(10)
    assert _cli("node", "token", "create", "uploader", "--home", str(home)).returncode in (0, 2)
    assert _loose(home) == []
    platform = tmp_path / "platform"
    r = _cli("platform", "init", str(platform))
    assert r.returncode == 0, r.stderr
    assert _loose(platform) == []


def test_import_prints_no_source_path(tmp_path: Path) -> None:
    home = tmp_path / "node"
    assert _cli("node", "init", str(home), "--provider", "Paths Hospital").returncode == 0
    src = tmp_path / "in" / FOLDER
    src.mkdir(parents=True)
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    ds.save_as(src / f"{NAME}_ok.dcm")
    (src / f"{NAME}_{MRN}_report.dcm").write_bytes(b"\x00" * 300)  # not DICOM: a problem row names the file
    (src / f"{MRN}.dcm").write_bytes(b"DICM" * 10)
    outputs = []
    for extra in ([], ["--json"]):
        r = _cli("node", "import", str(tmp_path / "in"), "--home", str(home), *extra)
        assert r.returncode == 0, r.stderr
        outputs += [r.stdout, r.stderr]
    report = json.loads(outputs[2])
    assert report["dicom"]["problems"] and all(set(p) == {"file_digest", "outcome", "reason"}
                                               for p in report["dicom"]["problems"])
    missing = _cli("node", "import", str(tmp_path / "in" / f"{FOLDER}_gone"), "--home", str(home))
    assert missing.returncode != 0
    outputs += [missing.stdout, missing.stderr]
    logs = [p.read_text(errors="replace") for p in (home / "logs").rglob("*") if p.is_file()]
    audit = [p.read_text(errors="replace") for p in home.rglob("*.jsonl")]
    for text in outputs + logs + audit:
        assert "Doe" not in text and MRN not in text, text[:2000]
    assert "Not stored" in outputs[0]  # the problems were shown, by keyed digest

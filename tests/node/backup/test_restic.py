"""Encrypted off-site copies through restic, offline against a local repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from incisive.common.errors import ConfigError
from incisive.node.backup import config, ops
from incisive.node.backup.config import Target
from incisive.node.backup.restic import Restic
from incisive.node.fsck import fsck
from incisive.node.home import Node
from tests.node.backup.helpers import catalogue_rows, store_hashes

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic not installed")


@pytest.fixture
def restic_target(sqlite_node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Target:
    monkeypatch.setenv("RESTIC_CACHE_DIR", str(tmp_path / "restic-cache"))
    monkeypatch.delenv("RESTIC_PASSWORD", raising=False)
    monkeypatch.delenv("RESTIC_PASSWORD_FILE", raising=False)
    password = tmp_path / "restic-password"
    password.write_text("a long test-only restic password\n")
    target = config.add_target(sqlite_node.home, "offsite", f"restic:{tmp_path / 'repo'}", password_file=password)
    Restic(target).ensure_repository()
    return target


def test_restic_backup_verify_restore(sqlite_node: Node, cohort: Path, restic_target: Target, tmp_path: Path) -> None:
    from tests.node.backup.helpers import import_cohort

    import_cohort(sqlite_node, cohort / "dicom")
    seen: list[tuple[int, int, int, int]] = []
    report, manifest = ops.run(sqlite_node, restic_target, progress=lambda *a: seen.append(a))
    assert report.objects == manifest.totals["objects"] > 0 and report.copied > 0
    again, _ = ops.run(sqlite_node, restic_target)
    assert again.skipped >= report.objects  # only the staging files (dump, config, manifest) are new

    rows = ops.list_snapshots(restic_target, sqlite_node.settings.node_id)
    assert [r["objects"] for r in rows] == [report.objects, report.objects]
    check = ops.verify(restic_target, sqlite_node.settings.node_id, full=True, home=sqlite_node.home)
    assert check.ok and check.objects_checked == 2 * report.objects

    objects, catalogue = store_hashes(sqlite_node.home), catalogue_rows(sqlite_node.catalogue.url)
    restored = ops.restore(restic_target, sqlite_node.settings.node_id, report.snapshot, tmp_path / "r")
    node = Node.open(Path(restored.home))
    try:
        assert fsck(node).clean and store_hashes(node.home) == objects
        assert catalogue_rows(node.catalogue.url) == catalogue
    finally:
        node.catalogue.dispose()


def test_restic_damage_detected(sqlite_node: Node, cohort: Path, restic_target: Target, tmp_path: Path) -> None:
    from tests.node.backup.helpers import import_cohort

    import_cohort(sqlite_node, cohort / "dicom")
    ops.run(sqlite_node, restic_target)
    # flip one byte in the largest pack (object data); a missing tree pack would make restic retry for minutes
    pack = max((p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x01
    pack.write_bytes(bytes(data))
    report = ops.verify(restic_target, sqlite_node.settings.node_id, full=True)
    assert not report.ok and [p.kind for p in report.problems] == ["repository-damaged"]


def test_restic_needs_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESTIC_PASSWORD", raising=False)
    monkeypatch.delenv("RESTIC_PASSWORD_FILE", raising=False)
    with pytest.raises(ConfigError, match="no password"):
        Restic(Target("x", "restic", str(tmp_path / "repo"))).env()

"""Corruption on the target is reported precisely: flipped byte, missing object, truncation, damaged dump."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from incisive.cli import app
from incisive.node.backup import config, ops
from incisive.node.backup.manifest import Repository
from incisive.node.home import Node
from tests.node.backup.helpers import dir_target


def _backed_up(node: Node, tmp_path: Path) -> tuple[Repository, str, str]:
    target = dir_target(tmp_path)
    report, manifest = ops.run(node, target)
    repo = Repository.for_node(Path(target.location), node.settings.node_id)
    return repo, report.snapshot, sorted(manifest.object_sizes())[0]


def _kinds(node: Node, tmp_path: Path, full: bool) -> list[tuple[str, str]]:
    report = ops.verify(dir_target(tmp_path), node.settings.node_id, full=full)
    return [(p.kind, p.item) for p in report.problems]


def test_flipped_byte_found_by_full_verify(loaded: Node, tmp_path: Path) -> None:
    repo, sid, digest = _backed_up(loaded, tmp_path)
    path = repo.pool.path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert _kinds(loaded, tmp_path, full=True) == [("corrupt-object", digest)]
    assert repo.verified(sid) is None


def test_missing_and_truncated_objects(loaded: Node, tmp_path: Path) -> None:
    repo, _sid, digest = _backed_up(loaded, tmp_path)
    second = sorted(repo.load(repo.snapshot_ids()[0]).object_sizes())[1]
    repo.pool.path(digest).unlink()
    with repo.pool.path(second).open("r+b") as fh:
        fh.truncate(10)
    kinds = _kinds(loaded, tmp_path, full=False)
    assert ("missing-object", digest) in kinds and ("truncated-object", second) in kinds and len(kinds) == 2


def test_truncated_catalogue_dump(loaded: Node, tmp_path: Path) -> None:
    repo, sid, _ = _backed_up(loaded, tmp_path)
    manifest = repo.load(sid)
    dump = repo.snapshot_dir(sid) / manifest.catalogue["file"]
    size = dump.stat().st_size
    with dump.open("r+b") as fh:
        fh.truncate(size // 2)
    problems = ops.verify(dir_target(tmp_path), loaded.settings.node_id).problems
    assert [(p.kind, p.item, p.snapshots) for p in problems] == [("truncated-file", dump.name, [sid])]
    assert f"{size // 2} bytes, expected {size}" in problems[0].detail


def test_clean_target_verifies_and_is_recorded(loaded: Node, tmp_path: Path) -> None:
    repo, sid, _ = _backed_up(loaded, tmp_path)
    target = dir_target(tmp_path)
    report = ops.verify(target, loaded.settings.node_id, full=True, home=loaded.home)
    assert report.ok and report.snapshots == [sid]
    assert repo.verified(sid) == {"time": repo.verified(sid)["time"], "full": True}  # type: ignore[index]


@pytest.mark.usefixtures("cohort")
def test_cli_verify_json_exit_code(sqlite_node: Node, cohort: Path, tmp_path: Path) -> None:
    from tests.node.backup.helpers import import_cohort

    import_cohort(sqlite_node, cohort / "dicom")
    drive = tmp_path / "drive"
    drive.mkdir()
    config.add_target(sqlite_node.home, "usb", str(drive))
    runner = CliRunner()
    home = ["--home", str(sqlite_node.home)]
    assert runner.invoke(app, ["backup", "run", "--json", *home]).exit_code == 0
    repo = Repository.for_node(drive, sqlite_node.settings.node_id)
    digest = sorted(repo.load(repo.snapshot_ids()[0]).object_sizes())[0]
    repo.pool.path(digest).unlink()
    result = runner.invoke(app, ["backup", "verify", "--json", *home])
    assert result.exit_code == 1
    assert '"missing-object"' in result.stdout and digest in result.stdout

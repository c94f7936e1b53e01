"""Import → backup → delete the node → restore → fsck clean, identical objects and catalogue rows."""

from __future__ import annotations

import shutil
from pathlib import Path

from incisive.node.backup import ops
from incisive.node.backup.manifest import Repository
from incisive.node.fsck import fsck
from incisive.node.home import Node
from tests.node.backup.helpers import catalogue_rows, dir_target, store_hashes


def test_backup_delete_restore_identical(loaded: Node, tmp_path: Path, restore_url: str) -> None:
    target = dir_target(tmp_path)
    report, manifest = ops.run(loaded, target)
    assert report.copied == report.objects > 0 and report.missing_in_store == 0
    assert not ops.verify(target, loaded.settings.node_id, full=True, home=loaded.home).problems

    url = loaded.catalogue.url
    objects_before = store_hashes(loaded.home)
    rows_before = catalogue_rows(url)
    loaded.catalogue.dispose()
    shutil.rmtree(loaded.home)

    to = tmp_path / "restored"
    restored = ops.restore(target, loaded.settings.node_id, "latest", to, catalogue_url=restore_url)
    assert restored.objects == report.objects and restored.catalogue == manifest.catalogue["dialect"]
    assert store_hashes(to) == objects_before
    node = Node.open(to)
    try:
        check = fsck(node)
        assert check.clean, check.as_dict()
        assert catalogue_rows(node.catalogue.url) == rows_before
        assert node.settings.node_id == loaded.settings.node_id
        assert not (to / "secrets" / "pseudonym.key").exists()
    finally:
        node.catalogue.dispose()


def test_incremental_copies_nothing_new(loaded: Node, tmp_path: Path) -> None:
    target = dir_target(tmp_path)
    first, _ = ops.run(loaded, target)
    second, _ = ops.run(loaded, target)
    assert second.copied == 0 and second.skipped == first.objects
    repo = Repository.for_node(Path(target.location), loaded.settings.node_id)
    assert len(repo.snapshot_ids()) == 2
    rows = ops.list_snapshots(target, loaded.settings.node_id)
    assert [r["objects"] for r in rows] == [first.objects, first.objects]


def test_unmounted_drive_is_refused(sqlite_node: Node, tmp_path: Path) -> None:
    import pytest

    from incisive.common.errors import ConfigError

    target = dir_target(tmp_path)
    ops.run(sqlite_node, target)
    shutil.rmtree(Path(target.location) / "incisive")  # the mount point is there, the drive is not
    with pytest.raises(ConfigError, match="is the drive mounted"):
        ops.run(sqlite_node, target)

"""Retention keeps the right snapshots and removes only objects no remaining snapshot references."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from incisive.common.errors import InputError
from incisive.node.backup import ops
from incisive.node.backup.manifest import Repository
from incisive.node.backup.prune import select_keep
from incisive.node.catalogue.models import Instance
from incisive.node.fsck import fsck
from incisive.node.home import Node
from tests.node.backup.helpers import dir_target


def _snaps(*dates: str) -> list[tuple[str, datetime]]:
    return [(f"s{i}", datetime.fromisoformat(d).replace(tzinfo=UTC)) for i, d in enumerate(dates)]


def test_select_keep_last_and_monthly() -> None:
    snaps = _snaps("2026-01-05", "2026-01-20", "2026-02-03", "2026-02-17", "2026-03-02", "2026-03-16")
    assert select_keep(snaps, 2, 0) == {"s5", "s4"}
    assert select_keep(snaps, 0, 2) == {"s5", "s3"}  # newest of March and of February
    assert select_keep(snaps, 1, 3) == {"s5", "s3", "s1"}
    assert select_keep(snaps, 1, 0, always={"s0"}) == {"s5", "s0"}
    with pytest.raises(InputError):
        select_keep(snaps, -1, 0)


def test_prune_removes_only_unreferenced(loaded: Node, tmp_path: Path, restore_url: str) -> None:
    target = dir_target(tmp_path)
    first, m1 = ops.run(loaded, target)
    with loaded.catalogue.session() as s:  # one instance leaves the node (e.g. a withdrawn consent)
        digest = s.scalars(select(Instance.object_hash).order_by(Instance.object_hash)).first()
        s.execute(delete(Instance).where(Instance.object_hash == digest))
    assert digest is not None
    loaded.store.remove(digest)
    second, m2 = ops.run(loaded, target)
    assert digest in m1.object_sizes() and digest not in m2.object_sizes()

    repo = Repository.for_node(Path(target.location), loaded.settings.node_id)
    dry = ops.prune(target, loaded.settings.node_id, keep_last=1, keep_monthly=0, dry_run=True)
    assert dry["removed"] == [first.snapshot] and repo.snapshot_ids() == [first.snapshot, second.snapshot]

    result = ops.prune(target, loaded.settings.node_id, keep_last=1, keep_monthly=0)
    assert result["kept"] == [second.snapshot] and result["removed"] == [first.snapshot]
    assert result["objects_removed"] == 1 and not repo.pool.exists(digest)
    assert all(repo.pool.exists(d) for d in m2.object_sizes())
    assert ops.verify(target, loaded.settings.node_id, full=True).ok
    restored = ops.restore(target, loaded.settings.node_id, "latest", tmp_path / "r", catalogue_url=restore_url)
    node = Node.open(Path(restored.home))
    assert fsck(node).clean
    node.catalogue.dispose()


def test_prune_keeps_newest_verified(sqlite_node: Node, tmp_path: Path) -> None:
    target = dir_target(tmp_path)
    first, _ = ops.run(sqlite_node, target)
    ops.verify(target, sqlite_node.settings.node_id, home=sqlite_node.home)
    second, _ = ops.run(sqlite_node, target)
    result = ops.prune(target, sqlite_node.settings.node_id, keep_last=1, keep_monthly=0)
    assert result["kept"] == [first.snapshot, second.snapshot] and result["removed"] == []
    with pytest.raises(InputError, match="keep at least one"):
        ops.prune(target, sqlite_node.settings.node_id, keep_last=0, keep_monthly=0)

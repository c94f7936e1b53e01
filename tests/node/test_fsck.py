from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from incisive.node.catalogue.models import Instance
from incisive.node.fsck import fsck
from incisive.node.home import Node
from incisive.node.ingest.dicom_import import import_dicom


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset % len(raw)] ^= 0x40
    path.write_bytes(bytes(raw))


def test_clean_store_is_clean(node: Node, cohort: Path) -> None:
    import_dicom(node, cohort / "dicom", workers=1)
    report = fsck(node)
    assert report.clean and report.objects_checked == report.rows_checked > 0


def test_detects_flipped_byte_missing_object_orphan_and_partial(node: Node, cohort: Path) -> None:
    import_dicom(node, cohort / "dicom", workers=1)
    digests = sorted(node.store.iter_digests())
    for i, digest in enumerate(digests[:3]):  # a flipped byte anywhere: header, middle, pixel data
        _flip(node.store.path(digest), [0, 5000, -1][i])
    node.store.path(digests[3]).unlink()
    orphan, _ = node.store.put(b"not referenced by any row")
    (node.store.tmp / "x.part").write_bytes(b"partial")
    report = fsck(node)
    assert sorted(report.corrupt) == digests[:3]
    assert report.missing == [digests[3]]
    assert report.orphans == [orphan]
    assert report.partial_writes == 1 and not report.clean

    repaired = fsck(node, repair=True).repaired
    assert repaired["moved_aside"] == 3 and repaired["orphans_removed"] == 1 and repaired["partial_removed"] == 1
    assert repaired["rows_dropped"] >= 4
    assert fsck(node).clean
    assert (node.store.root / "corrupt" / digests[0]).is_file()  # set aside, not deleted

    again = import_dicom(node, cohort / "dicom", workers=1)  # re-import restores what was dropped
    assert again.counts["imported"] == repaired["rows_dropped"]
    assert fsck(node).clean


def test_repair_recatalogues_our_orphans(node: Node, cohort: Path) -> None:
    """Crash between object fsync and catalogue commit: the object is an orphan; repair indexes it."""
    import_dicom(node, cohort / "dicom", workers=1)
    with node.catalogue.session() as s:
        victim = s.scalars(select(Instance).order_by(Instance.id)).first()
        assert victim is not None
        digest = victim.object_hash
        s.delete(victim)
    assert fsck(node).orphans == [digest]
    assert fsck(node, repair=True).repaired["recatalogued"] == 1
    assert fsck(node).clean
    with node.catalogue.session() as s:
        assert s.scalar(select(func.count()).where(Instance.object_hash == digest)) == 1

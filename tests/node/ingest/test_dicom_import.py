"""Folder import against both catalogue backends, including every kind of bad input from the issue."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from incisive.node.catalogue.models import ImportIssue, Instance, QuarantineItem
from incisive.node.home import Node
from incisive.node.ingest import dicom_file
from incisive.node.ingest.dicom_import import import_dicom

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _count(node: Node, model: type) -> int:
    with node.catalogue.session() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def _one_file(cohort: Path) -> Path:
    return next(iter(sorted((cohort / "dicom").rglob("img0001.dcm"))))


def test_cohort_import_is_idempotent(node: Node, cohort: Path) -> None:
    first = import_dicom(node, cohort / "dicom", workers=2)
    n_files = sum(1 for p in (cohort / "dicom").rglob("*.dcm"))
    assert first.counts["imported"] + first.counts["quarantined"] == n_files
    assert first.counts["rejected"] == 0
    assert _count(node, Instance) == first.counts["imported"]
    assert _count(node, QuarantineItem) == first.counts["quarantined"] >= 1
    objects = set(node.store.iter_digests())
    second = import_dicom(node, cohort / "dicom", workers=1)
    assert second.counts["duplicate"] == n_files and second.counts["imported"] == 0
    assert set(node.store.iter_digests()) == objects


def test_bad_files_are_reported_not_fatal(node: Node, cohort: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    good = _one_file(cohort)
    shutil.copy(good, src / "good.dcm")
    (src / "garbage.dcm").write_bytes(os.urandom(4096))
    (src / "notes.txt").write_text("not dicom at all")
    (src / "truncated.dcm").write_bytes(good.read_bytes()[:1500])
    (src / "cut_pixels.dcm").write_bytes(good.read_bytes()[:-100])
    ds = pydicom.dcmread(good)
    del ds.SOPInstanceUID
    ds.save_as(src / "no_uid.dcm", enforce_file_format=False)
    (src / "sub" / "loop").symlink_to(src, target_is_directory=True)  # symlink loop
    outside = tmp_path / "outside.dcm"
    shutil.copy(good, outside)
    (src / "escape.dcm").symlink_to(outside)
    (src / "dangling.dcm").symlink_to(tmp_path / "nope")
    os.mkfifo(src / "fifo.dcm")
    report = import_dicom(node, src, workers=1)
    reasons = {p["file"]: p["reason"] for p in report.problems}
    assert report.counts["imported"] == 1
    assert reasons["garbage.dcm"] == "not a DICOM file"
    assert reasons["notes.txt"] == "not a DICOM file"
    assert reasons["truncated.dcm"] in ("truncated file (an element is shorter than its declared length)",
                                        "image instance without pixel data (truncated or stripped file)")
    assert reasons["cut_pixels.dcm"] == "truncated file (an element is shorter than its declared length)"
    assert reasons["no_uid.dcm"] == "cannot de-identify: no SOPInstanceUID"
    assert reasons["sub/loop"] == "directory symlink not followed"
    assert reasons["escape.dcm"] == "symlink points outside the import folder"
    assert reasons["dangling.dcm"] == "broken symlink"
    assert reasons["fifo.dcm"] == "not a regular file"
    assert report.counts["rejected"] == len(reasons)
    assert _count(node, Instance) == 1
    assert _count(node, ImportIssue) == len(reasons)
    assert len(list(node.store.iter_digests())) == 1


def test_unreadable_and_oversized_files(node: Node, cohort: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(_one_file(cohort), src / "a.dcm")
    real_read = Path.read_bytes

    def deny(self: Path) -> bytes:
        if self.name == "a.dcm":
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    report = import_dicom(node, src, workers=1)
    assert report.problems == [{"file": "a.dcm", "outcome": "rejected", "reason": "permission denied"}]
    monkeypatch.setattr(Path, "read_bytes", real_read)
    node.settings.max_file_bytes = 100
    report = import_dicom(node, src, workers=1)
    assert report.problems[0]["reason"] == "file larger than the 100 byte limit"
    assert _count(node, Instance) == 0


def test_same_uid_different_bytes_keeps_first(node: Node, cohort: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    good = _one_file(cohort)
    shutil.copy(good, src / "a.dcm")
    import_dicom(node, src, workers=1)
    (src / "a.dcm").unlink()
    ds = pydicom.dcmread(good)
    ds.InstanceNumber = 999  # same SOPInstanceUID, other content
    ds.save_as(src / "b.dcm")
    report = import_dicom(node, src, workers=1)
    assert report.counts["conflict"] == 1
    assert "kept the first" in report.problems[0]["reason"]
    with node.catalogue.session() as s:
        assert s.scalar(select(Instance.instance_number)) != 999
    assert len(list(node.store.iter_digests())) == 1


def test_pydicom_vendor_files(sqlite_node: Node, tmp_path: Path) -> None:
    """Real files from many vendors: each is imported, quarantined or rejected with a reason; none aborts."""
    report = import_dicom(sqlite_node, PYDICOM_FILES, workers=2)
    total = sum(report.counts[k] for k in ("imported", "quarantined", "rejected", "duplicate", "conflict"))
    assert total == sum(1 for p in PYDICOM_FILES.rglob("*") if p.is_file())
    assert report.counts["imported"] >= 40
    assert "image instance without pixel data (truncated or stripped file)" in {p["reason"] for p in report.problems}
    assert all(p["reason"] for p in report.problems)


def test_worker_silences_pydicom(cohort: Path) -> None:
    dicom_file.init_worker(dicom_file.WorkerConfig(key=b"k" * 32))
    outcome = dicom_file.process_bytes(b"\x08\x00" + os.urandom(300))
    assert outcome.status == "rejected" and outcome.reason


def _large_instance(pixel_bytes: int) -> bytes:
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    side = int((pixel_bytes / 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.PixelData = bytes(range(256)) * (side * side * 2 // 256) + b"\x00" * (side * side * 2 % 256)
    ds.SOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_large_values_are_spliced_unread_and_still_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pixel data above DEFER_BYTES is not read while de-identifying (memory: issue 16) but copied from the source
    by offset: the stored bytes equal those of a full read, and a cut-off large value is still refused."""
    dicom_file.init_worker(dicom_file.WorkerConfig(key=b"k" * 32))
    raw = _large_instance(3 * dicom_file.DEFER_BYTES)
    deferred = dicom_file.process_bytes(raw)
    monkeypatch.setattr(dicom_file, "DEFER_BYTES", None)  # pydicom reads every value
    full = dicom_file.process_bytes(raw)
    assert deferred.status == full.status == "stored"
    assert deferred.data == full.data and deferred.digest == full.digest
    src = pydicom.dcmread(io.BytesIO(raw))
    assert pydicom.dcmread(io.BytesIO(deferred.data)).PixelData == src.PixelData
    monkeypatch.setattr(dicom_file, "DEFER_BYTES", 1 << 20)
    cut = dicom_file.process_bytes(raw[:-100])
    assert (cut.status, cut.reason) == ("rejected", "truncated file (an element is shorter than its declared length)")


def test_a_spooled_instance_is_deidentified_from_its_file_as_from_its_bytes(tmp_path: Path) -> None:
    """process_file (a received C-STORE above the spool threshold) parses the open file and copies pixel data from
    it in 1 MiB reads: the same stored bytes as process_bytes; a file cut short is refused, not half stored."""
    dicom_file.init_worker(dicom_file.WorkerConfig(key=b"k" * 32))
    raw = _large_instance(5 * dicom_file.DEFER_BYTES)
    path = tmp_path / "spooled.dcm"
    path.write_bytes(raw)
    from_file, from_bytes = dicom_file.process_file(path), dicom_file.process_bytes(raw)
    assert from_file.status == from_bytes.status == "stored"
    assert from_file.data == from_bytes.data
    path.write_bytes(raw[:-100])
    cut = dicom_file.process_file(path)
    assert (cut.status, cut.reason) == ("rejected", "truncated file (an element is shorter than its declared length)")

"""The splice serialiser must produce exactly what pydicom's writer produces, element by element."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info

from incisive.common.crypto import Pseudonymiser
from incisive.node.deid import Deidentifier, DeidRejected
from incisive.node.deid.serialise import file_meta_bytes, serialise

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _elements(ds: Dataset) -> list[tuple[int, str, object]]:
    out = []
    for elem in ds.iterall():
        value = elem.value if elem.VR != "SQ" else len(elem.value)
        out.append((int(elem.tag), str(elem.VR), value))
    return out


def _sources(cohort: Path) -> list[Path]:
    files = [p for p in sorted(PYDICOM_FILES.rglob("*")) if p.is_file()]
    return files + sorted((cohort / "dicom").rglob("*.dcm"))


def test_splice_equals_pydicom_writer(cohort: Path) -> None:
    deid = Deidentifier(Pseudonymiser(bytes(range(32))))
    compared = 0
    for path in _sources(cohort):
        raw = path.read_bytes()
        try:
            ds = pydicom.dcmread(io.BytesIO(raw))
            deid.apply(ds)
        except (DeidRejected, pydicom.errors.InvalidDicomError):
            continue
        fast = serialise(ds, raw)
        reference = io.BytesIO()
        ds.save_as(reference, enforce_file_format=True)
        a = pydicom.dcmread(io.BytesIO(fast))
        b = pydicom.dcmread(io.BytesIO(reference.getvalue()))
        assert _elements(a) == _elements(b), path.name
        assert a.file_meta == b.file_meta, path.name
        compared += 1
    assert compared > 120


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "image_dfl.dcm", "CT_small.dcm", "MR_small_implicit.dcm"])
def test_encodings_round_trip(name: str) -> None:
    raw = (PYDICOM_FILES / name).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(raw))
    Deidentifier(Pseudonymiser(bytes(range(32)))).apply(ds)
    out = pydicom.dcmread(io.BytesIO(serialise(ds, raw)))
    assert out.PatientIdentityRemoved == "YES"
    assert out.pixel_array.shape == pydicom.dcmread(PYDICOM_FILES / name).pixel_array.shape


def test_file_meta_bytes_equal_pydicom(cohort: Path) -> None:
    """Byte for byte what pydicom's write_file_meta_info writes, for every file meta we can read."""
    checked = 0
    for path in _sources(cohort):
        try:
            meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        except Exception:
            continue
        reference = DicomBytesIO()
        reference.write(b"\x00" * 128 + b"DICM")
        try:
            write_file_meta_info(reference, copy.deepcopy(meta), enforce_standard=True)
        except (AttributeError, ValueError):
            with pytest.raises((AttributeError, ValueError)):
                file_meta_bytes(copy.deepcopy(meta))
            continue
        assert file_meta_bytes(copy.deepcopy(meta)) == reference.getvalue(), path.name
        checked += 1
    assert checked > 120

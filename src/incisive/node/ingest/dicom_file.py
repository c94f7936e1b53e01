"""One file in, one outcome out: parse, check, de-identify, serialise (runs in worker processes).

Nothing read from the file leaves this module except the de-identified bytes and catalogue facts taken from
the *de-identified* dataset. Reasons are fixed phrases, never values from the file.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from incisive.common.crypto import Pseudonymiser, sha256_hex
from incisive.node.deid import Deidentifier, DeidRejected, SafePrivate, quarantine_reason
from incisive.node.deid.serialise import serialise

PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class WorkerConfig:
    key: bytes
    safe_private: tuple[str, ...] = ()
    quarantine_modalities: tuple[str, ...] = ()
    max_file_bytes: int = 2 * 1024**3


@dataclass
class FileOutcome:
    status: str  # stored | quarantine | rejected
    reason: str = ""
    data: bytes = b""
    digest: str = ""
    facts: dict[str, Any] = field(default_factory=dict)


_state: dict[str, Any] = {}


def init_worker(config: WorkerConfig) -> None:
    """Process initialiser: build the de-identifier once and silence pydicom (its messages may quote values)."""
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
    pydicom_log = logging.getLogger("pydicom")
    pydicom_log.setLevel(logging.CRITICAL)
    pydicom_log.propagate = False
    safe = tuple(SafePrivate.parse(s) for s in config.safe_private)
    _state["deid"] = Deidentifier(Pseudonymiser(config.key), safe)
    _state["config"] = config


def process_path(path: Path) -> FileOutcome:
    config: WorkerConfig = _state["config"]
    try:
        size = path.stat().st_size
        if size > config.max_file_bytes:
            return FileOutcome("rejected", f"file larger than the {config.max_file_bytes} byte limit")
        raw = path.read_bytes()
    except PermissionError:
        return FileOutcome("rejected", "permission denied")
    except OSError as exc:
        return FileOutcome("rejected", f"cannot read: {exc.strerror or 'I/O error'}")
    return process_bytes(raw)


def process_bytes(raw: bytes) -> FileOutcome:
    """De-identify one serialised DICOM instance (Part 10 file, or a dataset without preamble)."""
    config: WorkerConfig = _state["config"]
    deid: Deidentifier = _state["deid"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(raw), force=_looks_like_raw_dataset(raw))
            problem = truncation(ds)
            if problem:
                return FileOutcome("rejected", problem)
            reason = quarantine_reason(ds, config.quarantine_modalities)
            deid.apply(ds)
            data = serialise(ds, raw)
    except DeidRejected as exc:
        return FileOutcome("rejected", f"cannot de-identify: {exc}")
    except InvalidDicomError:
        return FileOutcome("rejected", "not a DICOM file")
    except Exception as exc:  # pydicom raises many types on malformed input; never let one abort a run
        return FileOutcome("rejected", f"malformed DICOM ({type(exc).__name__})")
    return FileOutcome("quarantine" if reason else "stored", reason or "", data, sha256_hex(data), facts(ds))


def truncation(ds: Dataset) -> str | None:
    """pydicom reads a cut-off file without complaint; catch short values and image IODs without pixels."""
    for elem in ds._dict.values():
        if isinstance(elem, RawDataElement) and elem.value is not None and elem.length != UNDEFINED_LENGTH:
            if len(elem.value) != elem.length:
                return "truncated file (an element is shorter than its declared length)"
    if not any(tag in ds._dict for tag in PIXEL_TAGS) and "Image Storage" in UID(str(ds.get("SOPClassUID", ""))).name:
        return "image instance without pixel data (truncated or stripped file)"
    return None


def _looks_like_raw_dataset(raw: bytes) -> bool:
    """Files without the 128-byte preamble but starting with a group 0008 element (old exports)."""
    return len(raw) > 8 and raw[128:132] != b"DICM" and raw[:2] == b"\x08\x00"


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        if isinstance(value, (list, tuple)) or (hasattr(value, "__getitem__") and not isinstance(value, str)):
            value = value[0]
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError, IndexError):
        return None


def _str(ds: Dataset, keyword: str, limit: int) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value not in (None, "") else ""
    return text[:limit] or None


def age_band(age: str | int | None) -> str | None:
    """'063Y' or 63 → '60-69'; ≥ 90 → '90+' (HIPAA); months/weeks/days → '0-9'."""
    if age is None or age == "":
        return None
    if isinstance(age, str):
        age = age.strip().upper()
        if len(age) == 4 and age[:3].isdigit() and age[3] in "DWMY":
            years = int(age[:3]) if age[3] == "Y" else 0
        elif age.isdigit():
            years = int(age)
        else:
            return None
    else:
        years = int(age)
    if years < 0 or years > 130:
        return None
    if years >= 90:
        return "90+"
    low = years // 10 * 10
    return f"{low}-{low + 9}"


def facts(ds: Dataset) -> dict[str, Any]:
    """Catalogue facts, read from the de-identified dataset only."""
    study_date = _str(ds, "StudyDate", 8)
    sex = _str(ds, "PatientSex", 8)
    return {
        "pseudonym": str(ds.PatientID),
        "sex": sex.upper() if sex else None,
        "age_band": age_band(_str(ds, "PatientAge", 4)),
        "study_uid": str(ds.StudyInstanceUID),
        "study_date": study_date if study_date and len(study_date) == 8 and study_date.isdigit() else None,
        "study_description": _str(ds, "StudyDescription", 128),
        "series_uid": str(ds.SeriesInstanceUID),
        "modality": _str(ds, "Modality", 16),
        "body_part": _str(ds, "BodyPartExamined", 64),
        "series_description": _str(ds, "SeriesDescription", 128),
        "series_number": _int(ds.get("SeriesNumber")),
        "sop_uid": str(ds.SOPInstanceUID),
        "sop_class_uid": str(ds.SOPClassUID),
        "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")) or None,
        "instance_number": _int(ds.get("InstanceNumber")),
        "has_pixels": any(tag in ds._dict for tag in PIXEL_TAGS),
        "rows": _int(ds.get("Rows")),
        "columns": _int(ds.get("Columns")),
        "pixel_spacing": _float(ds.get("PixelSpacing")),
        "slice_thickness": _float(ds.get("SliceThickness")),
    }

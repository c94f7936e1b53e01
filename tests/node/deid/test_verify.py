"""The Central Node's door (``door = "verify"``): what our de-identifier writes passes, anything it would have
removed is refused by keyword (never by value), and the door stores the instance's bytes as they came."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path

import pydicom
import pydicom.config
import pytest
from pydicom._dicom_dict import DicomDictionary
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from incisive.common.crypto import generate_key, sha256_hex
from incisive.node.deid import SafePrivate
from incisive.node.deid.iod import REQUIRED, requirements
from incisive.node.deid.policy import keyword_of, resolve
from incisive.node.deid.table import ACTIONS
from incisive.node.deid.verify import check_deidentified, held_back
from incisive.node.ingest import dicom_file
from tests.node.deid.marker_corpus import build_corpus
from tests.node.deid.samples import item as sr_item
from tests.node.deid.samples import report

KEY = bytes(range(32))
MARK = "MK9Q7Z"  # a value that must never appear in a reason


@pytest.fixture
def worker() -> Iterator[None]:
    """The per-file worker's process-wide state, restored afterwards (other tests in this process use it)."""
    saved = dict(dicom_file._state)
    saved_mode = pydicom.config.settings.writing_validation_mode
    log = logging.getLogger("pydicom")
    saved_level, saved_propagate = log.level, log.propagate
    with warnings.catch_warnings():
        yield
    dicom_file._state.clear()
    dicom_file._state.update(saved)
    pydicom.config.settings.writing_validation_mode = saved_mode
    log.setLevel(saved_level)
    log.propagate = saved_propagate


def _deidentify(raw: bytes, **options: object) -> dicom_file.FileOutcome:
    dicom_file.init_worker(dicom_file.WorkerConfig(key=KEY, **options))  # type: ignore[arg-type]
    return dicom_file.process_bytes(raw)


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _sources(cohort: Path) -> list[Path]:
    files = sorted(p for p in (cohort / "dicom").rglob("*") if p.is_file())
    return files + sorted(Path(f) for f in get_testdata_files("*"))


def test_our_output_passes_and_the_originals_fail(worker: None, cohort: Path) -> None:
    dicom_file.init_worker(dicom_file.WorkerConfig(key=KEY))
    checked = 0
    failures: list[tuple[str, str]] = []
    for path in _sources(cohort):
        outcome = dicom_file.process_path(path)
        if outcome.status == "rejected":
            continue
        checked += 1
        reason = check_deidentified(_read(outcome.data))
        if reason:
            failures.append((path.name, reason))
    assert failures == []
    assert checked >= 100
    cohort_files = [p for p in (cohort / "dicom").rglob("*") if p.is_file()]
    for path in cohort_files:
        ds = pydicom.dcmread(path)
        assert check_deidentified(ds) is not None
        # a provider that only claims de-identification is still refused, by keyword
        ds.PatientIdentityRemoved, ds.DeidentificationMethod = "YES", "claimed"
        reason = check_deidentified(ds)
        assert reason is not None and reason.startswith("not de-identified: ")


def test_marker_corpus_passes_once_deidentified(worker: None) -> None:
    for entry in build_corpus():
        raw = io.BytesIO()
        entry.dataset.save_as(raw, enforce_file_format=True)
        for options in ({}, {"sr_keep_text": True}):
            outcome = _deidentify(raw.getvalue(), **options)
            assert outcome.status != "rejected", (entry.name, outcome.reason)
            assert check_deidentified(_read(outcome.data), keep_text=bool(options)) is None, entry.name
        forged = _read(raw.getvalue())
        forged.PatientIdentityRemoved, forged.DeidentificationMethod = "YES", "claimed"
        assert check_deidentified(forged) is not None, entry.name


@pytest.fixture
def clean_ct(worker: None, cohort: Path) -> Dataset:
    path = next(p for p in sorted((cohort / "dicom").rglob("*")) if p.is_file() and pydicom.dcmread(p).Modality == "CT")
    return _read(_deidentify(path.read_bytes()).data)


def _value_for(vr: str) -> object:
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "IS", "DS"):
        return 7
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return b"MK9Q7Z\x00\x01"
    if vr == "AT":
        return 0x00100010
    return MARK


def test_every_attribute_the_profile_removes_is_refused_by_keyword(clean_ct: Dataset) -> None:
    required = requirements(str(clean_ct.SOPClassUID))
    refused = 0
    for tag, action in sorted(ACTIONS.items()):
        vr = resolve(tag).vr or "UN"  # a few attributes of the 2026c table are newer than pydicom's dictionary
        if action not in ("X", "Z") or tag in (0x00100010, 0x00100020) or required.get((0, tag)) == REQUIRED:
            continue
        ds = deepcopy(clean_ct)
        if vr == "SQ":
            inner = Dataset()
            inner.CodeValue = "1"
            ds.add_new(tag, vr, Sequence([inner]))
        else:
            ds.add_new(tag, vr, _value_for(vr))
        reason = check_deidentified(ds)
        keyword = keyword_of(tag)
        assert reason is not None and keyword in reason, (keyword, reason)
        assert MARK not in reason
        refused += 1
    assert refused >= 250  # 288 X and Z attributes in the 2026c table that CT does not require


def test_nested_private_text_and_file_level_leftovers(clean_ct: Dataset) -> None:
    assert check_deidentified(clean_ct) is None
    nested = deepcopy(clean_ct)
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "2.25.1"
    item.OtherPatientIDs = MARK
    nested.SourceImageSequence = Sequence([item])
    assert check_deidentified(nested) == ("not de-identified: OtherPatientIDs present (removed by the PS3.15 "
                                          "profile)")
    named = deepcopy(clean_ct)
    named.ReferringPhysicianName = "Doe^Jane"
    assert "ReferringPhysicianName" in (check_deidentified(named) or "")
    free_text = deepcopy(clean_ct)
    unlisted = next(tag for tag in sorted(DicomDictionary) if DicomDictionary[tag][0] == "LT"
                    and resolve(tag).beyond_table and resolve(tag).action == "X")
    free_text.add_new(unlisted, "LT", MARK)  # Table E.1-1 does not list it: removed as free text
    assert check_deidentified(free_text) == (f"not de-identified: {keyword_of(unlisted)} present (removed by the "
                                             "de-identifier's rules for its value representation)")

    private = deepcopy(clean_ct)
    private.add_new(0x00090010, "LO", "ACME 1.0")
    private.add_new(0x00091001, "LO", MARK)
    reason = check_deidentified(private)
    assert reason is not None and "(0009,1001)" in reason and MARK not in reason
    assert check_deidentified(private, safe_private=[SafePrivate.parse("ACME 1.0:0009,1001")]) is None
    creator_only = deepcopy(clean_ct)
    creator_only.add_new(0x00090010, "LO", "ACME 1.0")
    assert "(0009,0010)" in (check_deidentified(creator_only) or "")

    preamble = deepcopy(clean_ct)
    preamble.preamble = b"II*\x00" + b"\x00" * 124
    assert "preamble" in (check_deidentified(preamble) or "")
    meta = deepcopy(clean_ct)
    meta.file_meta.SourceApplicationEntityTitle = "HOSPITAL_PACS"
    assert "SourceApplicationEntityTitle" in (check_deidentified(meta) or "")
    for keyword in ("PatientIdentityRemoved", "PatientID"):
        missing = deepcopy(clean_ct)
        delattr(missing, keyword)
        assert check_deidentified(missing) is not None
    no_method = deepcopy(clean_ct)
    del no_method.DeidentificationMethod
    assert check_deidentified(no_method) is None  # the code sequence is enough
    del no_method.DeidentificationMethodCodeSequence
    assert "DeidentificationMethod" in (check_deidentified(no_method) or "")


def test_dummies_and_empty_values_where_the_iod_needs_the_attribute(clean_ct: Dataset) -> None:
    ds = deepcopy(clean_ct)
    ds.AccessionNumber = ""  # Z, Type 2 in CT: emptied
    ds.StudyID = ""
    assert check_deidentified(ds) is None
    ds.AccessionNumber = MARK
    assert "AccessionNumber" in (check_deidentified(ds) or "")
    ds.AccessionNumber = "ANONYMIZED"  # the engine's dummy is only taken where the IOD requires a value
    assert "AccessionNumber" in (check_deidentified(ds) or "")


def test_structured_report_text(worker: None) -> None:
    raw = io.BytesIO()
    sr = report()
    sr.ContentSequence.append(sr_item("TEXT", TextValue="CT THORAX"))  # imaging words: the cleaner keeps them
    sr.save_as(raw, enforce_file_format=True)
    removed = _deidentify(raw.getvalue())
    assert check_deidentified(_read(removed.data)) is None
    kept = _deidentify(raw.getvalue(), sr_keep_text=True)
    ds = _read(kept.data)
    assert any(item.ValueType == "TEXT" for item in ds.ContentSequence)
    assert check_deidentified(ds, keep_text=True) is None
    reason = check_deidentified(ds)
    assert reason == "not de-identified: a TEXT content item present (removed by Clean Structured Content)"
    odd = _read(removed.data)
    odd.ContentSequence[0].ValueType = "SPECTRUM"
    assert held_back(odd, ()) == "structured report content item of an unknown value type"


def test_the_verify_door_stores_bytes_as_they_came(worker: None, cohort: Path, tmp_path: Path) -> None:
    files = sorted(p for p in (cohort / "dicom").rglob("*") if p.is_file())
    clean = {p: _deidentify(p.read_bytes()) for p in files}
    dicom_file.init_worker(dicom_file.WorkerConfig(key=generate_key(), door="verify",
                                                   quarantine_modalities=("US", "SC")))
    stored = quarantined = 0
    for path, outcome in clean.items():
        door = dicom_file.process_bytes(outcome.data)
        assert door.status == outcome.status, (path.name, door.reason)
        assert door.data == outcome.data and door.digest == sha256_hex(outcome.data) == outcome.digest
        assert door.facts == outcome.facts and door.removed == {}
        stored += door.status == "stored"
        quarantined += door.status == "quarantine"
        original = dicom_file.process_bytes(path.read_bytes())
        assert original.status == "rejected"
        assert original.reason == "not de-identified: PatientIdentityRemoved is not YES"
    assert stored and quarantined

    data = next(o.data for o in clean.values() if o.status == "stored")
    spooled = tmp_path / "spooled.dcm"
    spooled.write_bytes(data)
    assert dicom_file.process_file(spooled, whole_up_to=0).data == data  # read from the file, not parsed bytes
    assert dicom_file.process_bytes(data[:-100]).reason.startswith("truncated file")
    burned = _read(data)
    burned.BurnedInAnnotation = "YES"
    out = io.BytesIO()
    burned.save_as(out, enforce_file_format=True)
    # CT does not require the attribute, so the engine never writes it: an instance that says YES was not ours
    assert "BurnedInAnnotation" in dicom_file.process_bytes(out.getvalue()).reason
    assert held_back(burned, ()) == "BurnedInAnnotation is YES"  # where the IOD keeps it, the door quarantines
    bare = DicomBytesIO()
    bare.is_little_endian, bare.is_implicit_VR = True, True
    write_dataset(bare, _read(data))
    assert "file meta" in dicom_file.process_bytes(bare.getvalue()).reason


def test_the_door_stores_the_same_bytes_whoever_wrote_the_file_meta(worker: None, cohort: Path) -> None:
    """Over C-STORE pynetdicom rebuilds the file meta (its own implementation UID and version); over STOW the
    provider's file comes as written. Either way the same instance stores the same bytes (no false conflict)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    path = next(p for p in sorted((cohort / "dicom").rglob("*")) if p.is_file())
    clean = _deidentify(path.read_bytes())
    assert clean.status == "stored"
    ds = _read(clean.data)
    meta = ds.file_meta
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.9.3811.3.0.4"  # as a pynetdicom SCP writes it
    meta.ImplementationVersionName = "PYNETDICOM_304"
    fp = DicomBytesIO()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    end = 144 + int.from_bytes(clean.data[140:144], "little")
    rewritten = fp.getvalue() + clean.data[end:]
    assert rewritten != clean.data
    dicom_file.init_worker(dicom_file.WorkerConfig(key=generate_key(), door="verify"))
    as_sent = dicom_file.process_bytes(clean.data)
    via_scp = dicom_file.process_bytes(rewritten)
    assert as_sent.status == via_scp.status == "stored"
    assert as_sent.data == clean.data  # our own output passes through unchanged
    assert via_scp.data == clean.data and via_scp.digest == as_sent.digest

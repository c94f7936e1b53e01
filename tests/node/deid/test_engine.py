from __future__ import annotations

import io
import itertools
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from incisive.common.crypto import Pseudonymiser, generate_key
from incisive.node.deid import Deidentifier, DeidRejected, SafePrivate, quarantine_reason, shift_date

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(scope="module")
def deid() -> Deidentifier:
    return Deidentifier(Pseudonymiser(generate_key()))


def _series(cohort: Path, modality: str) -> list[Dataset]:
    folder = next(p for p in sorted((cohort / "dicom").rglob(f"{modality}*")) if p.is_dir())
    return [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]


def test_identity_is_replaced_everywhere(deid: Deidentifier, cohort: Path) -> None:
    ds = _series(cohort, "CT")[0] if list((cohort / "dicom").rglob("CT*")) else _series(cohort, "MR")[0]
    original_id, original_name = str(ds.PatientID), str(ds.PatientName)
    pseudonym = deid.apply(ds).pseudonym
    assert ds.PatientID == pseudonym == str(ds.PatientName) and pseudonym != original_id
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113107", "113108", "113105", "113104"}
    assert ds.DeidentificationMethod.startswith("incisive")
    for keyword in ("PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDsSequence", "IssuerOfPatientID"):
        assert keyword not in ds, keyword
    for keyword in ("PatientBirthDate", "InstitutionName", "ReferringPhysicianName", "AccessionNumber",
                    "DeviceSerialNumber", "StationName", "OperatorsName"):
        assert not ds.get(keyword), keyword
    assert ds.PatientSex in ("F", "M") and ds.PatientAge.endswith("Y")  # patient characteristics retained
    assert original_name.split("^")[0] not in str(ds.StudyDescription)
    assert original_name.split("^")[0] not in str(ds.get("ImageComments", ""))
    # Type 1 in the Request Attributes Macro: a dummy, never emptied (PS3.15 E.1.1)
    assert ds.RequestAttributesSequence[0].get("RequestedProcedureID", "") == "ANONYMIZED"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_private_tags_removed_and_safe_list_kept(cohort: Path) -> None:
    ds = _series(cohort, "MR")[0]
    assert 0x00291010 in ds
    Deidentifier(Pseudonymiser(generate_key())).apply(ds)
    assert not [e for e in ds.iterall() if e.tag.is_private]
    ds = _series(cohort, "MR")[0]
    keep = SafePrivate.parse("ACME HOSPITAL PACS:0029,1011")
    Deidentifier(Pseudonymiser(generate_key()), (keep,)).apply(ds)
    private = sorted(int(e.tag) for e in ds if e.tag.is_private)
    assert private == [0x00290010, 0x00291011]
    with pytest.raises(ValueError, match="CREATOR"):
        SafePrivate.parse("nonsense")


def test_uids_remapped_consistently_and_references_survive(deid: Deidentifier, cohort: Path) -> None:
    series = _series(cohort, "MR")
    originals = [str(ds.SOPInstanceUID) for ds in series]
    study = {str(ds.StudyInstanceUID) for ds in series}
    for ds in series:
        deid.apply(ds)
    assert len({str(ds.StudyInstanceUID) for ds in series}) == len(study) == 1
    assert len({str(ds.SeriesInstanceUID) for ds in series}) == 1
    new = [str(ds.SOPInstanceUID) for ds in series]
    assert all(u.startswith("2.25.") for u in new) and not set(new) & set(originals)
    for previous, ds in itertools.pairwise(series):
        ref = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ref == previous.SOPInstanceUID  # reference in a nested sequence points at the remapped UID
    assert series[0].StudyInstanceUID == deid.p.uid(study.pop())
    assert "ReferencedStudySequence" not in series[0]  # Table E.1-1 X/Z on a Type 3 sequence: removed, not left empty


def test_dates_shift_per_patient_and_keep_intervals(deid: Deidentifier) -> None:
    def make(pid: str, date: str) -> Dataset:
        ds = Dataset()
        ds.PatientID, ds.StudyDate, ds.AcquisitionDateTime = pid, date, date + "101530.5+0100"
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", f"1.2.3.{pid[-1]}.{date}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.5"
        ds.StudyTime = "101530"
        return ds

    a1, a2, b1 = make("MRN1", "20200101"), make("MRN1", "20200311"), make("MRN2", "20200101")
    for ds in (a1, a2, b1):
        deid.apply(ds)
    from datetime import datetime

    def days(x: Dataset, y: Dataset) -> int:
        return (datetime.strptime(y.StudyDate, "%Y%m%d") - datetime.strptime(x.StudyDate, "%Y%m%d")).days

    assert days(a1, a2) == 70
    assert a1.StudyDate != "20200101" and a1.StudyTime == "101530"
    assert a1.AcquisitionDateTime[:8] == a1.StudyDate and a1.AcquisitionDateTime.endswith("101530.5+0100")
    assert a1.StudyDate != b1.StudyDate or deid.p.day_offset(str(a1.PatientID)) == deid.p.day_offset(str(b1.PatientID))
    assert shift_date("20200229", 1) == "20200301" and shift_date("2020", 5) == ""


def test_missing_identifiers_are_rejected(deid: Deidentifier) -> None:
    ds = Dataset()
    ds.PatientID = "X"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    with pytest.raises(DeidRejected, match="no SOPInstanceUID"):
        deid.apply(ds)


def test_quarantine_rules() -> None:
    ds = Dataset()
    ds.Modality, ds.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"
    assert quarantine_reason(ds, ["US", "SC"]) is None
    ds.BurnedInAnnotation = "YES"
    assert quarantine_reason(ds, []) == "BurnedInAnnotation is YES"
    ds.BurnedInAnnotation, ds.Modality = "NO", "US"
    assert "US" in (quarantine_reason(ds, ["US"]) or "")
    ds.Modality, ds.SOPClassUID = "OT", "1.2.840.10008.5.1.4.1.1.7"
    assert "SOP class" in (quarantine_reason(ds, []) or "")


def test_real_vendor_files_deidentify_or_are_rejected_cleanly(deid: Deidentifier) -> None:
    """pydicom's bundled files (many vendors, transfer syntaxes, sequences): output must round-trip."""
    done = rejected = 0
    for path in sorted(PYDICOM_FILES.rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            continue
        try:
            deid.apply(ds)
        except DeidRejected:
            rejected += 1
            continue
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        again = pydicom.dcmread(io.BytesIO(buf.getvalue()))
        assert again.PatientIdentityRemoved == "YES"
        assert str(again.SOPInstanceUID).startswith("2.25.")
        assert not [e for e in again.iterall() if e.tag.is_private]
        done += 1
    assert done >= 100 and rejected < done

"""Small DICOM objects with fake PHI in the places issue 12 found it (an SR report's text, unlisted attributes)."""

from __future__ import annotations

import io
import re

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
REPORT = "Mrs Jane Doe (MRN 12345678, DOB 01/02/1960) seen today; call 0612-345678"
SECRETS = ("Jane", "Doe", "12345678", "0612", "345678", "1960", "Smith")


def base(sop_class: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, "1.2.3.4.5.6.7"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4.5", "1.2.3.4.6"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = "MRN12345678", "Doe^Jane^^Mrs", "19600201"
    ds.StudyDate, ds.Modality = "20240105", "SR" if sop_class == COMPREHENSIVE_SR else "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def item(value_type: str, relationship: str = "CONTAINS", **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = relationship, value_type
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "121071", "DCM", "Finding"
    item.ConceptNameCodeSequence = Sequence([concept])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def report() -> Dataset:
    ds = base(COMPREHENSIVE_SR)
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "M-8000/3", "SRT", "Neoplasm, malignant"
    measured = Dataset()
    measured.NumericValue = "12.5"
    unit = Dataset()
    unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "mm", "UCUM", "millimeter"
    measured.MeasurementUnitsCodeSequence = Sequence([unit])
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ContentSequence = Sequence([
        item("TEXT", TextValue=REPORT),
        item("PNAME", PersonName="Smith^John^^Dr"),
        item("DATE", Date="20240103"),
        item("DATETIME", DateTime="20240103101500"),
        item("TIME", Time="101500"),
        item("UIDREF", UID="1.2.3.4.99"),
        item("CODE", ConceptCodeSequence=Sequence([code])),
        item("NUM", MeasuredValueSequence=Sequence([measured])),
    ])
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()



def leaks(blob: str | bytes, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    """The ``secrets`` found in ``blob`` as whole words (not inside a longer run of letters or digits).

    Whole words because random output holds short digit runs by chance: a shifted study date 20160612 holds
    "0612", and four pseudonymised UIDs (2.25.<~39 random digits>, blanked here anyway) hold "1960" about 1.5 %
    of the time; both made "no secret in the output" checks flaky.
    """
    text = blob.decode("latin-1") if isinstance(blob, bytes) else blob
    text = _UID.sub("<uid>", text)
    return [s for s in secrets if re.search(rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])", text, re.I)]


_UID = re.compile(r"(?<![0-9.])2\.25\.[0-9]{10,}")

"""The engine fails closed: what Table E.1-1 does not list is judged by VR and kind (issue 12's findings)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from incisive.common.crypto import Pseudonymiser, generate_key
from incisive.node.deid import Deidentifier
from incisive.node.deid.policy import resolve
from incisive.node.deid.retain import RETAIN
from incisive.node.ingest.dicom_file import WorkerConfig, init_worker, process_bytes
from tests.node.deid.samples import CT, ENHANCED_CT, REPORT, RT_PLAN, base, item, leaks, report, to_bytes


@pytest.fixture(scope="module")
def deid() -> Deidentifier:
    return Deidentifier(Pseudonymiser(generate_key()))


def test_sr_text_removed_names_replaced_dates_shifted_codes_kept(deid: Deidentifier) -> None:
    ds = report()
    result = deid.apply(ds)
    items = {str(i.ValueType): i for i in ds.ContentSequence}
    assert "TEXT" not in items and result.removed["TextValue"] == 1
    assert str(items["PNAME"].PersonName) == "ANONYMOUS"  # Type 1 in the content item: replaced, not emptied
    day = lambda v: datetime.strptime(str(v)[:8], "%Y%m%d")  # noqa: E731
    assert items["DATE"].Date != "20240103"
    assert day(ds.StudyDate) - day(items["DATE"].Date) == timedelta(days=2)  # shifted with the study: 01-05 vs 01-03
    assert items["DATETIME"].DateTime[:8] == items["DATE"].Date and items["TIME"].Time == "101500"
    assert deid.p.uid("1.2.3.4.99") == items["UIDREF"].UID
    assert items["CODE"].ConceptCodeSequence[0].CodeMeaning == "Neoplasm, malignant"
    assert items["NUM"].MeasuredValueSequence[0].NumericValue == 12.5
    assert result.quarantine is None
    assert leaks(to_bytes(ds)) == [] and len(leaks(to_bytes(report()))) == 7  # the check finds all in the original


def test_sr_text_kept_through_the_cleaner_when_asked() -> None:
    ds = report()
    Deidentifier(Pseudonymiser(generate_key()), keep_text=True).apply(ds)
    texts = [str(i.TextValue) for i in ds.ContentSequence if i.ValueType == "TEXT"]
    assert texts == ["SEEN"] or texts == []  # the cleaner keeps imaging vocabulary only: nothing identifying
    assert leaks(to_bytes(ds)) == []


def test_sr_with_an_unknown_value_type_is_quarantined(deid: Deidentifier) -> None:
    ds = report()
    ds.ContentSequence.append(item("PRIVATETHING"))
    assert deid.apply(ds).quarantine == "structured report content item of an unknown value type"


def test_encapsulated_document_is_quarantined(deid: Deidentifier) -> None:
    ds = base("1.2.840.10008.5.1.4.1.1.104.1")
    ds.EncapsulatedDocument = b"%PDF-1.4 Jane Doe"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    assert deid.apply(ds).quarantine == "encapsulated document cannot be cleaned"


def test_unlisted_identifiers_are_removed_and_counted(deid: Deidentifier) -> None:
    ds = base(CT)
    ds.PatientBirthDateInAlternativeCalendar = "1380/11/12"
    ds.add_new(0x00140104, "PN", "Reviewer^Second")  # Secondary Reviewer Name
    step = Dataset()
    step.CommentsOnTheScheduledProcedureStep = "call Jane on 0612 345678"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.add_new(0x00091234, "LO", "private")  # odd group: private, always gone
    ds.add_new(0x00129999, "LO", "a tag no dictionary knows")
    result = deid.apply(ds)
    assert "PatientBirthDateInAlternativeCalendar" not in ds and 0x00140104 not in ds
    assert "ScheduledProcedureStepSequence" not in ds  # its only attribute went: no zero-item Type 3 sequence
    assert 0x00129999 not in ds and 0x00091234 not in ds
    assert result.removed["PatientBirthDateInAlternativeCalendar"] == 1
    assert result.removed["SecondaryReviewerName"] == 1
    assert result.removed["CommentsOnTheScheduledProcedureStep"] == 1
    assert result.removed["(0012,9999)"] == 1


def test_type1_gets_a_dummy_type2_is_emptied(deid: Deidentifier) -> None:
    plan = base(RT_PLAN)
    plan.Modality, plan.RTPlanLabel = "RTPLAN", "Doe J 12/03/2021"
    plan.RTPlanGeometry = "PATIENT"
    deid.apply(plan)
    assert plan.RTPlanLabel == "ANONYMIZED"  # cleaned to nothing, Type 1 in RT General Plan
    enhanced = base(ENHANCED_CT)
    enhanced.DeviceSerialNumber, enhanced.Manufacturer = "SN-4711", "ACME"
    ct = base(CT)
    ct.DeviceSerialNumber, ct.ReferringPhysicianName, ct.AccessionNumber = "SN-4711", "Who^Dr", "A123"
    deid.apply(enhanced)
    deid.apply(ct)
    assert enhanced.DeviceSerialNumber == "ANONYMIZED"  # Type 1 in Enhanced General Equipment
    assert enhanced.Manufacturer == "ACME"  # retain list
    assert not ct.get("DeviceSerialNumber") and "ReferringPhysicianName" in ct and not ct.ReferringPhysicianName


def test_registry_uids_and_class_uids_kept_instance_uids_remapped(deid: Deidentifier) -> None:
    ds = base(CT)
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.3.12.2.1107.5.9.1", "1.2.3.4.5.6.8"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.add_new(0x00182042, "UI", "1.2.3.77")  # Target UID (Table E.1-1: U)
    scheme = Dataset()
    scheme.CodingSchemeUID = "2.16.840.1.113883.6.96"
    scheme.CodingSchemeDesignator = "SCT"
    ds.CodingSchemeIdentificationSequence = Sequence([scheme])
    deid.apply(ds)
    assert ds.SOPClassUID == CT and ds.ReferencedImageSequence[0].ReferencedSOPClassUID == "1.3.12.2.1107.5.9.1"
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == deid.p.uid("1.2.3.4.5.6.8")
    assert ds[0x00182042].value == deid.p.uid("1.2.3.77")
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeUID == "2.16.840.1.113883.6.96"


def test_code_strings_kept_only_when_required_and_well_formed(deid: Deidentifier) -> None:
    ds = base(CT)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]  # Type 1 in CT Image
    ds.PatientPosition = "Jane Doe"  # Type 2, but not a code string: free text
    ds.ScanOptions = "HELICAL"  # Type 3 on the retain list
    ds.PixelPresentation = "MONOCHROME"  # Type 3, not reviewed: removed
    deid.apply(ds)
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"] and ds.ScanOptions == "HELICAL"
    assert "PatientPosition" in ds and not ds.PatientPosition
    assert "PixelPresentation" not in ds


def test_overlay_group_removed_whole(deid: Deidentifier) -> None:
    ds = base(CT)
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60003000, "OW", b"\x00" * 8)
    ds.add_new(0x60000022, "LO", "Jane's overlay")
    result = deid.apply(ds)
    assert not [t for t in ds.keys() if t >> 16 == 0x6000]  # noqa: SIM118 (iterating a Dataset yields elements)
    assert result.removed["OverlayGroup"] == 1


def test_every_retain_entry_is_a_known_unlisted_keyword() -> None:
    from pydicom.datadict import tag_for_keyword

    for keyword, (action, reason) in RETAIN.items():
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        assert action in ("K", "C") and len(reason) > 20, keyword
        assert resolve(int(tag)).beyond_table, f"{keyword} is in Table E.1-1: the table decides, not the list"


def test_import_summary_counts_removals_by_keyword(tmp_path: object) -> None:
    init_worker(WorkerConfig(key=generate_key()))
    ds = report()
    ds.add_new(0x00140104, "PN", "Reviewer^Second")
    outcome = process_bytes(to_bytes(ds))
    assert outcome.status == "stored", outcome.reason
    assert outcome.removed["TextValue"] == 1 and outcome.removed["SecondaryReviewerName"] == 1
    stored = pydicom.dcmread(io.BytesIO(outcome.data))
    assert REPORT.encode() not in outcome.data and "TEXT" not in {i.ValueType for i in stored.ContentSequence}


def test_docs_list_every_retain_entry() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[3] / "docs" / "deidentification.md").read_text()
    missing = [keyword for keyword in RETAIN if f"`{keyword}`" not in doc]
    assert not missing, f"docs/deidentification.md does not list {missing}"


def test_person_names_seen_anywhere_are_dropped_from_descriptors(deid: Deidentifier) -> None:
    ds = base(CT)
    ds.OperatorsName = "Liver^Heart"  # a person whose name parts are also imaging words
    ds.StudyDescription = "CT LIVER HEART ABDOMEN"
    deid.apply(ds)
    assert ds.StudyDescription == "CT ABDOMEN"

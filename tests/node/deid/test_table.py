from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as e11

from incisive.node.deid.table import (
    ACTIONS,
    CLEAN_DESCRIPTORS,
    MASKED_ACTIONS,
    RETAIN_PATIENT_CHARACTERISTICS,
    action_for,
)


def test_every_attribute_of_table_e11_has_an_action() -> None:
    singles = [(g << 16) | e for g, e, *rest in e11.ALL_TAGS if not rest]
    masked = [t for t in e11.ALL_TAGS if len(t) == 4]
    assert len(singles) + len(masked) == len(e11.ALL_TAGS) > 600
    for tag in singles:
        assert action_for(tag) in {"D", "Z", "X", "K", "C", "U", "S"}, hex(tag)
    assert len(MASKED_ACTIONS) == len(masked)


def test_repeating_groups() -> None:
    assert action_for(0x50000010) == "X"  # curve data, any 50xx element
    assert action_for(0x50FE3000) == "X"
    assert action_for(0x60003000) == "X"  # overlay data
    assert action_for(0x60024000) == "X"  # overlay comments
    assert action_for(0x60000010) is None  # overlay rows: kept


def test_options_override_the_basic_profile() -> None:
    assert action_for(0x00100040) == "K"  # PatientSex: Retain Patient Characteristics
    assert action_for(0x00101010) == "K"  # PatientAge
    assert action_for(0x00081030) == "C"  # StudyDescription: Clean Descriptors
    assert action_for(0x00080020) == "S"  # StudyDate: Modified Dates
    assert action_for(0x0008002A) == "S"  # AcquisitionDateTime
    assert action_for(0x00100030) == "Z"  # PatientBirthDate stays empty
    assert action_for(0x00100010) == "Z"  # PatientName (replaced by the pseudonym)
    assert action_for(0x0020000D) == "U"  # StudyInstanceUID
    assert action_for(0x00080080) == "Z"  # InstitutionName
    assert action_for(0x0016002B) == "X"  # MakerNote: binary descriptor cannot be cleaned
    assert len(CLEAN_DESCRIPTORS) == 86 and len(RETAIN_PATIENT_CHARACTERISTICS) == 12
    assert action_for(0x7FE00010) is None  # pixel data kept
    assert len(ACTIONS) > 600

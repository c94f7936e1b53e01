"""The de-identification action table: PS3.15 Table E.1-1 plus the options this node applies.

Source of the Basic Profile column: the BSD-licensed ``dicom-anonymizer`` package (module
``dicomanonymizer.dicom_anonymization_databases.dicomfields_2026c``), which transcribes Table E.1-1 of the
DICOM 2026c edition: 655 attributes, including the masked repeating groups (50xx curves, 60xx overlays).
We take it rather than retype it and compile it into a ``tag -> action`` dict once at import.

Options applied on top (PS3.15 E.3):
* Retain Longitudinal Temporal Information with Modified Dates (113107): every DA/DT attribute of the table is
  shifted by a per-patient keyed day offset instead of being removed; TM values are kept, which is consistent
  with a whole-day shift (intervals are preserved). Patient's Birth Date stays emptied.
* Retain Patient Characteristics (113108): the column's K attributes are kept and its C ones cleaned.
* Clean Descriptors (113105): the column's attributes are cleaned (see :mod:`incisive.node.deid.text`).

Action codes (PS3.15 E.1.1): D dummy, Z zero-length, X remove, K keep, C clean, U UID remap. Compound codes
are resolved to the option that keeps the dataset valid where the attribute is Type 1/2: Z/D→Z, X/Z→Z, X/D→D,
X/Z/D→Z, X/Z/U*→U (recurse into the referencing sequence and remap UIDs). S is our code for "date shift".
"""

from __future__ import annotations

from typing import Final

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as e11
from pydicom.datadict import dictionary_VR, tag_for_keyword

STANDARD_EDITION: Final = "2026c"

_COMPOUND = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z",
    "X_Z_TAGS": "Z",
    "X_D_TAGS": "D",
    "X_Z_D_TAGS": "Z",
    "X_Z_U_STAR_TAGS": "U",
}

RETAIN_PATIENT_CHARACTERISTICS: Final = {
    "EthnicGroup": "K",
    "PatientAge": "K",
    "PatientSex": "K",
    "PatientSexNeutered": "K",
    "PatientSize": "K",
    "PatientWeight": "K",
    "PregnancyStatus": "K",
    "SmokingStatus": "K",
    "Allergies": "C",
    "PatientState": "C",
    "PreMedication": "C",
    "SpecialNeeds": "C",
}

CLEAN_DESCRIPTORS: Final = """
    AcquisitionComments AcquisitionProtocolDescription AdditionalPatientHistory AdmittingDiagnosesCodeSequence
    AdmittingDiagnosesDescription Allergies BeamDescription BolusDescription ClinicalTrialSeriesDescription
    ClinicalTrialTimePointDescription CompensatorDescription ConceptualVolumeDescription ContainerDescription
    ContrastBolusAgent ContributionDescription DecompositionDescription DerivationDescription
    DeviceSettingDescription DischargeDiagnosisDescription DoseReferenceDescription EntityDescription EntityLabel
    EntityLongLabel EntityName FixationDeviceDescription FractionationNotes FractionGroupDescription FrameComments
    IdentifyingComments ImageComments ImagingServiceRequestComments Impressions InterlockDescription
    InterlockOriginDescription InterpretationText LabelText LongDeviceDescription MakerNote MedicalAlerts
    MultienergyAcquisitionDescription Occupation PatientComments PatientState PerformedProcedureStepDescription
    PrescriptionDescription PrescriptionNotes PrescriptionNotesSequence PriorTreatmentDoseDescription ProtocolName
    RadiationDoseIdentificationLabel RadiationGenerationModeLabel ReasonForOmissionDescription ReasonForStudy
    ReasonForSuperseding ReasonForTheImagingServiceRequest ReasonForTheRequestedProcedure ReasonForVisit
    ReasonForVisitCodeSequence RequestAttributesSequence RequestedContrastAgent RequestedProcedureComments
    RequestedProcedureDescription ResultsComments RTPhysicianIntentNarrative RTPlanDescription RTPlanLabel
    RTPlanName RTPrescriptionLabel RTToleranceSetLabel RTTreatmentApproachLabel ScheduledProcedureStepDescription
    SeriesDescription ServiceEpisodeDescription SetupTechniqueDescription ShieldingDeviceDescription
    SpecimenDetailedDescription SpecimenShortDescription StudyComments StudyDescription
    TreatmentPositionGroupLabel TreatmentSite TreatmentTechniqueNotes TreatmentToleranceViolationDescription
    UserContentLabel UserContentLongLabel VisitComments
""".split()

# (code meaning, DCM code) for DeidentificationMethodCodeSequence, PS3.16 CID 7050
METHOD_CODES: Final = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
    ("113105", "Clean Descriptors Option"),
    ("113104", "Clean Structured Content Option"),
)

PATIENT_BIRTH_DATE: Final = 0x00100030


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - guards a pydicom dictionary change
        raise RuntimeError(f"pydicom does not know the keyword {keyword}")
    return int(tag)


def _build() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    actions: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for name, code in _COMPOUND.items():
        for entry in getattr(e11, name):
            if len(entry) == 2:
                actions[(entry[0] << 16) | entry[1]] = code
            else:
                group, element, gmask, emask = entry
                masked.append((group, element, gmask, emask, code))
    for tag in list(actions):
        if tag != PATIENT_BIRTH_DATE and _vr(tag) in ("DA", "DT"):
            actions[tag] = "S"
        elif _vr(tag) == "TM":
            actions[tag] = "K"
    for keyword in CLEAN_DESCRIPTORS:
        tag = _tag(keyword)
        # binary descriptors (MakerNote, DeviceSettingDescription) cannot be cleaned: remove them
        actions[tag] = "X" if _vr(tag) in ("OB", "UN") else "C"
    for keyword, code in RETAIN_PATIENT_CHARACTERISTICS.items():
        actions[_tag(keyword)] = code
    return actions, tuple(masked)


ACTIONS, MASKED_ACTIONS = _build()


def action_for(tag: int) -> str | None:
    """The action for a public attribute, or None when Table E.1-1 does not list it (kept)."""
    code = ACTIONS.get(tag)
    if code is not None:
        return code
    group, element = tag >> 16, tag & 0xFFFF
    for g, e, gmask, emask, masked_code in MASKED_ACTIONS:
        if group & gmask == g and element & emask == e & emask:
            return masked_code
    return None

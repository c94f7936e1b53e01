"""What survives de-identification although Table E.1-1 does not list it: the reviewed retain list and kinds.

The engine fails closed (docs/deidentification.md): a public attribute that neither Table E.1-1 nor this module
names is judged by its value representation. Names (PN) and free text (AE, LO, LT, SH, ST, UC, UR, UT) go,
dates (DA, DT) are shifted, UIDs remapped, and only numbers, times, ages and binary data (pixels, LUTs, curves'
numbers) are kept as they are. A Type 1 attribute that has to go gets a dummy value, a Type 2 one is emptied
(:mod:`incisive.node.deid.iod`).

Each entry below was reviewed: it is needed to read or use the image, and its values are chosen from a
vocabulary by the equipment or the standard, not typed by a person about a patient. ``K`` keeps the value;
``C`` passes it through the descriptor cleaner (:func:`incisive.node.deid.text.clean_text`), for labels a
person types but that are needed downstream (segment and ROI names). Adding an entry is a privacy decision:
give the reason, and the dictionary-marker test (tests/node/deid/test_dictionary_markers.py) shows its effect.
"""

from __future__ import annotations

import re
from typing import Final

from pydicom._dicom_dict import DicomDictionary  # the data dictionary itself (read only)

KEEP: Final = "K"
CLEAN: Final = "C"

_EQUIPMENT = "equipment identity chosen by the vendor (make, model, software), needed to harmonise images"
_CODE = "coded entry (PS3.3 8.8): values of a coding scheme, not free text"
_ACQ = "acquisition parameter set by the scanner from its own vocabulary"
_DISPLAY = "display/pixel interpretation parameter from the equipment; needed to show the image"
_LABEL = "label a person types but downstream tools need (segments, ROIs): cleaned to imaging vocabulary"
_CLASS_UID = "registry UID (SOP class, transfer syntax, coding scheme, template): identifies a kind, not a thing"

RETAIN: Final[dict[str, tuple[str, str]]] = {
    # equipment
    "Manufacturer": (KEEP, _EQUIPMENT),
    "ManufacturerModelName": (KEEP, _EQUIPMENT),
    "SoftwareVersions": (KEEP, _EQUIPMENT),
    # coded entries (Code Sequence Macro, PS3.3 Table 8.8-1)
    "CodeValue": (KEEP, _CODE),
    "CodingSchemeDesignator": (KEEP, _CODE),
    "CodingSchemeVersion": (KEEP, _CODE),
    "CodeMeaning": (KEEP, _CODE),
    "LongCodeValue": (KEEP, _CODE),
    "URNCodeValue": (KEEP, _CODE),
    "MappingResource": (KEEP, _CODE),
    "MappingResourceName": (KEEP, _CODE),
    "ContextIdentifier": (KEEP, _CODE),
    "ContextGroupExtensionFlag": (KEEP, _CODE),
    "CodingSchemeName": (KEEP, _CODE),
    "CodingSchemeResponsibleOrganization": (KEEP, _CODE),
    "TemplateIdentifier": (KEEP, _CODE),
    # acquisition (CT, MR, MG, US, PET)
    "BodyPartExamined": (KEEP, "anatomy from the modality worklist/protocol (defined terms, PS3.16 Annex L)"),
    "ScanOptions": (KEEP, _ACQ),
    "ConvolutionKernel": (KEEP, _ACQ),
    "FilterType": (KEEP, _ACQ),
    "ImagedNucleus": (KEEP, _ACQ),
    "SequenceName": (KEEP, _ACQ),
    "PulseSequenceName": (KEEP, _ACQ),
    "TransmitCoilName": (KEEP, _ACQ),
    "ReceiveCoilName": (KEEP, _ACQ),
    "AngioFlag": (KEEP, _ACQ),
    "ViewPosition": (KEEP, _ACQ),
    "ImageLaterality": (KEEP, _ACQ),
    "Laterality": (KEEP, _ACQ),
    "FrameLaterality": (KEEP, _ACQ),
    "ContrastBolusRoute": (KEEP, _ACQ),
    "AcquisitionDeviceProcessingCode": (KEEP, _ACQ),
    "PlateType": (KEEP, _ACQ),
    "TransducerData": (KEEP, _ACQ),
    "TransducerType": (KEEP, _ACQ),
    "RescaleType": (KEEP, _DISPLAY),
    "LossyImageCompression": (KEEP, "says whether pixels were lossy compressed (PS3.3 C.7.6.1.1.5)"),
    "LossyImageCompressionMethod": (KEEP, "names the lossy compression (defined terms)"),
    "ConversionType": (KEEP, "Secondary Capture conversion type (defined terms)"),
    "PresentationLUTShape": (KEEP, _DISPLAY),
    "WindowCenterWidthExplanation": (CLEAN, _DISPLAY),
    "LUTExplanation": (CLEAN, _DISPLAY),
    "PositionReferenceIndicator": (CLEAN, "anatomical reference point of the frame of reference"),
    # segmentation and RT structure labels
    "SegmentLabel": (CLEAN, _LABEL),
    "SegmentDescription": (CLEAN, _LABEL),
    "SegmentAlgorithmName": (CLEAN, _LABEL),
    "ContentLabel": (KEEP, "Content Identification label (CS): a code, e.g. SEGMENTATION"),
    # Type 2 code strings worth their value (a required Type 1 code string is kept by kind)
    "PatientPosition": (KEEP, "patient position relative to the equipment (defined terms HFS, FFS, ...)"),
    "PatientOrientation": (KEEP, "patient direction of rows/columns (letters A P L R H F)"),
    "ImageType": (KEEP, "image type (ORIGINAL/DERIVED, PRIMARY/SECONDARY, defined terms); Type 2 in US"),
    "MRAcquisitionType": (KEEP, "2D or 3D acquisition (enumerated values)"),
    "DetectorType": (KEEP, "detector technology (defined terms DIRECT, SCINTILLATOR, STORAGE, FILM)"),
    "CorrectedImage": (KEEP, "PET corrections applied (defined terms)"),
    "RTROIInterpretedType": (KEEP, "ROI type (defined terms GTV, PTV, ORGAN, ...)"),
    "ROIGenerationAlgorithm": (KEEP, "AUTOMATIC, SEMIAUTOMATIC or MANUAL (defined terms)"),
    "ContrastBolusAgentDetected": (KEEP, "YES or NO (enumerated values)"),
    "ContrastBolusAgentPhase": (KEEP, "contrast phase (defined terms)"),
}

# UI attributes whose values name a kind of thing (a SOP class, a transfer syntax, a coding scheme), never a
# patient's thing: kept whatever their root (vendors' private SOP classes, HL7 OIDs of coding schemes). Other
# "registry-like" UIDs (context groups, mapping resources, templates, extension creators) are remapped unless
# they lie under the DICOM root: a site's own UID root there would name the site's systems.
CLASS_UIDS: Final = frozenset(
    keyword
    for _tag, (vr, _vm, _name, _retired, keyword) in DicomDictionary.items()
    if vr == "UI" and re.search(r"(SOPClass(es)?(UID)?|SOPClassesSupported|TransferSyntaxUID|CodingSchemeUID|"
                                r"ImplementationClassUID)(InFile|InStudy|InSeries)?$", keyword)
)

# DICOM's own root: SOP classes, transfer syntaxes, coding schemes, well-known frames of reference (PS3.6 A)
REGISTRY_ROOT: Final = "1.2.840.10008."

_CS = re.compile(r"[A-Z0-9 _]{0,16}")


def is_code_string(value: str) -> bool:
    """A value the CS repertoire allows (PS3.5 6.2): 16 characters of upper case, digits, space, underscore."""
    return _CS.fullmatch(value) is not None


def kept_by_kind(keyword: str, vr: str, required: bool) -> str | None:
    """Why an attribute no table names is kept as it is, or None when the fail-closed rule applies to it.

    ``required``: Type 1/1C in the instance's IOD at that place (:func:`incisive.node.deid.iod.requirements`).
    A CS value is also checked against the CS repertoire by the engine; one that fails it is free text. A Type 2
    code string is emptied unless :data:`RETAIN` names it.
    """
    if keyword in CLASS_UIDS:
        return _CLASS_UID
    if vr == "TM":
        return "time of day: kept by the Retain Longitudinal Temporal Information option (dates shift whole days)"
    if vr == "CS" and required:
        return "code string the IOD requires a value of (Type 1/1C: enumerated values and defined terms)"
    return None


__all__ = ["CLASS_UIDS", "CLEAN", "KEEP", "REGISTRY_ROOT", "RETAIN", "is_code_string", "kept_by_kind"]

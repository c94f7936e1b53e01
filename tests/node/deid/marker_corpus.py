"""A corpus of instances with a unique marker in every public attribute their IOD can carry (issue 12, item 4).

One dataset per IOD family (CT, MR, MG for presentation, US, Comprehensive SR, SEG, RT Structure Set,
Secondary Capture) plus a vendor file full of private attributes. The attributes come from the standard's
module tables as shipped by highdicom (every module of the IOD, mandatory or not, every macro expanded, with
the sequence path of each nested attribute); each one pydicom's dictionary knows gets a value that can be
traced back to it:

* text (AE CS LO LT PN SH ST UC UR UT): a token ``MK000123`` (upper case, so valid in CS);
* DA: a distinct date in 1961-1965. The node shifts dates 5 to 10 years back, so a shifted date can never
  land in that window again: a value found in it is a marker that survived;
* DT: a date in the same window plus a time whose fraction is unique; TM: a time with a unique fraction;
* UI: a distinct UID under ``1.2.999``;
* numbers, AS and AT get valid values that mark nothing; binary VRs a few zero bytes.

Attributes that make the object what it is (SOP Class, Modality, character set, the image pixel module, SR
value types) get real values instead, so the instance stays a readable object of its IOD. The Comprehensive
SR gets a realistic content tree (a report's TEXT with a name, MRN, birth date and phone number, PNAME, DATE,
DATETIME, TIME, UIDREF, CODE, NUM, SCOORD, IMAGE items) in place of the flat content module, and the
attributes the issue names (PatientBirthDateInAlternativeCalendar, CommentsOnTheScheduledProcedureStep,
Secondary Reviewer Name) are added to every instance whether its IOD lists them or not.

Every marker is recorded as a :class:`Marker` (value, sequence path, keyword, VR) so a test can say which
attribute leaked. Building the whole corpus takes a few seconds (one of them loading highdicom's tables).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any, Final

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

CT: Final = "1.2.840.10008.5.1.4.1.1.2"
# name -> (SOP Class UID, Modality, BitsAllocated of the pixel data or 0 for none)
IODS: Final = {
    "CT Image": (CT, "CT", 16),
    "MR Image": ("1.2.840.10008.5.1.4.1.1.4", "MR", 16),
    "Digital Mammography (for presentation)": ("1.2.840.10008.5.1.4.1.1.1.2", "MG", 16),
    "US Image": ("1.2.840.10008.5.1.4.1.1.6.1", "US", 8),
    "Comprehensive SR": ("1.2.840.10008.5.1.4.1.1.88.33", "SR", 0),
    "Segmentation": ("1.2.840.10008.5.1.4.1.1.66.4", "SEG", 1),
    "RT Structure Set": ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", 0),
    "Secondary Capture": ("1.2.840.10008.5.1.4.1.1.7", "OT", 8),
}
VENDOR: Final = "Vendor file (private attributes)"

TEXT_VRS: Final = frozenset("AE CS LO LT PN SH ST UC UR UT".split())
BINARY_VRS: Final = frozenset("OB OW OF OD OL OV UN".split())
WINDOW_START: Final = date(1961, 1, 1)  # DA/DT markers lie in [1961-01-01, 1965-12-31]: 1826 days
WINDOW_DAYS: Final = 1826

# bytes patterns that find markers in stored objects, re-cased or with the token split by a separator
TOKEN_RE: Final = re.compile(rb"mk[\s_.^-]*(\d{6})", re.IGNORECASE)
UID_RE: Final = re.compile(rb"(?<![\d.])1\.2\.999\.\d+")
DA_RE: Final = re.compile(rb"(?<!\d)196[1-5]\d{4}(?![\d])")
DT_RE: Final = re.compile(rb"(?<!\d)196[1-5]\d{10}\.\d{6}")
TM_RE: Final = re.compile(rb"(?<![\d.])\d{6}\.\d{6}(?!\d)")

# the radiology report of the issue, as an SR TEXT item; its fragments are checked as well as its token
REPORT_TEXT: Final = "Mrs Jane Doe (MRN 12345678, DOB 01/02/1960) call 0612-345678"
SPS_COMMENT: Final = "Patient Jane Doe anxious, call her daughter on 0612-345678"
PHRASES: Final = ("Jane", "Doe", "12345678", "01/02/1960", "0612-345678", "345678")

_NUMBERS: Final[dict[str, Any]] = {"US": 1, "SS": 1, "UL": 1, "SL": 1, "UV": 1, "SV": 1, "FL": 1.0, "FD": 1.0,
                                   "DS": "1", "IS": "1", "AS": "045Y", "AT": 0x00100010}
_BINARY: Final = {"OB": b"\x00\x00", "OW": b"\x00\x00", "UN": b"\x00\x00", "OF": b"\x00" * 4,
                  "OL": b"\x00" * 4, "OD": b"\x00" * 8, "OV": b"\x00" * 8}


@dataclass(frozen=True)
class Marker:
    """A value that identifies one attribute of one corpus instance."""

    value: str  # the token (text VRs) or the whole value (DA DT TM UI) or a report fragment (phrase)
    path: tuple[str, ...]  # keywords of the enclosing sequences, outermost first
    keyword: str  # pydicom keyword, or "CREATOR:gggg,xxee" for a private attribute
    vr: str
    kind: str  # text | date | datetime | time | uid | phrase | private

    def where(self) -> str:
        return "/".join((*self.path, self.keyword))


@dataclass
class CorpusItem:
    name: str
    sop_class_uid: str
    dataset: Dataset
    markers: list[Marker] = field(default_factory=list)
    instance_number: int = 0  # set in InstanceNumber (a number: kept), tells the instances of one SOP class apart
    sr_value_types: Counter[str] = field(default_factory=Counter)

    def public_markers(self) -> list[Marker]:
        return [m for m in self.markers if m.kind not in ("phrase", "private")]

    def private_markers(self) -> list[Marker]:
        return [m for m in self.markers if m.kind == "private"]


class _Values:
    """Unique marker values for the whole corpus (one counter, so every token and UID is distinct)."""

    def __init__(self) -> None:
        self.n = 0
        self.dates = 0

    def _next(self) -> int:
        self.n += 1
        return self.n

    def token(self) -> str:
        return f"MK{self._next():06d}"

    def value(self, vr: str) -> tuple[Any, str, str]:
        """(value to store, marker string, kind) for a marker-carrying VR."""
        if vr in TEXT_VRS:
            token = self.token()
            if vr == "PN":
                return f"{token}^TEST", token, "text"
            if vr == "UR":
                return f"https://pacs.example.org/{token}", token, "text"
            return token, token, "text"
        n = self._next()
        if vr == "UI":
            uid = f"1.2.999.{n}"
            return uid, uid, "uid"
        if vr == "DA":
            if self.dates >= WINDOW_DAYS:
                raise RuntimeError("more DA markers than days in the marker window")
            self.dates += 1
            value = (WINDOW_START + timedelta(days=self.dates - 1)).strftime("%Y%m%d")
            return value, value, "date"
        if vr == "DT":
            day = (WINDOW_START + timedelta(days=n % WINDOW_DAYS)).strftime("%Y%m%d")
            value = f"{day}101010.{n:06d}"
            return value, value, "datetime"
        if vr == "TM":
            value = f"101010.{n:06d}"
            return value, value, "time"
        raise ValueError(vr)


def _vr(tag: int) -> str:
    vr = str(dictionary_VR(tag))
    return {"OB or OW": "OB", "US or SS": "US", "US or OW": "US", "US or SS or OW": "US"}.get(vr, vr)


@lru_cache(maxsize=1)
def _standard() -> tuple[dict[str, list[dict[str, str]]], dict[str, list[dict[str, Any]]], dict[str, str]]:
    from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

    return get_iod_module_map(), get_module_attribute_map(), get_sop_class_iod_map()


def iod_attributes(sop_class_uid: str, skip_modules: frozenset[str] = frozenset(),
                   usages: frozenset[str] = frozenset("MCU")) -> list[tuple[tuple[str, ...], str]]:
    """(sequence path, keyword) of every attribute of every module of the IOD that pydicom knows."""
    iods, modules, sop_classes = _standard()
    out: dict[tuple[tuple[str, ...], str], None] = {}
    for module in iods[sop_classes[sop_class_uid]]:
        if module["key"] in skip_modules or module["usage"] not in usages:
            continue
        for attribute in modules[module["key"]]:
            keyword, path = attribute["keyword"], tuple(attribute["path"])
            found = [tag_for_keyword(k) for k in (*path, keyword)]
            tags = [int(t) for t in found if t is not None]
            if len(tags) < len(found) or any(t >> 16 == 0x0002 or not t & 0xFFFF for t in tags):
                continue  # unknown to this pydicom, file meta, or a group length
            if any(_vr(t) != "SQ" for t in tags[:-1]):
                continue
            out[(path, keyword)] = None
    return list(out)


class _Builder:
    def __init__(self, values: _Values, item: CorpusItem) -> None:
        self.values = values
        self.item = item

    def mark(self, ds: Dataset, path: tuple[str, ...], keyword: str) -> None:
        """Give ``ds.<keyword>`` a marker (or a valid non-marker value for numbers and binaries)."""
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        vr = _vr(tag)
        if vr == "SQ":
            if tag not in ds:
                ds.add_new(tag, "SQ", Sequence([Dataset()]))
        elif vr in _NUMBERS:
            ds.add_new(tag, vr, _NUMBERS[vr])
        elif vr in _BINARY:
            ds.add_new(tag, vr, _BINARY[vr])
        else:
            value, marker, kind = self.values.value(vr)
            ds.add_new(tag, vr, value)
            self.item.markers.append(Marker(marker, path, keyword, vr, kind))

    def text(self, ds: Dataset, path: tuple[str, ...], keyword: str, prefix: str) -> None:
        """A free-text attribute holding identifying prose, its token, and its fragments recorded."""
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        vr = _vr(tag)
        token = self.values.token()
        ds.add_new(tag, vr, f"{prefix} {token}")
        self.item.markers.append(Marker(token, path, keyword, vr, "text"))
        for phrase in PHRASES:
            if re.search(rf"(?<![A-Za-z0-9]){re.escape(phrase)}(?![A-Za-z0-9])", prefix):
                self.item.markers.append(Marker(phrase, path, keyword, vr, "phrase"))

    def fill(self, ds: Dataset, attributes: list[tuple[tuple[str, ...], str]], fixed: dict[str, Any]) -> None:
        for path, keyword in attributes:
            if not path and keyword in fixed:
                continue
            item = ds
            for seq in path:
                if seq not in item:
                    setattr(item, seq, Sequence([Dataset()]))
                item = item[seq].value[0]
            if keyword not in item:
                self.mark(item, path, keyword)


def _file_meta(ds: Dataset, syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta = meta


def _fixed(sop_class_uid: str, modality: str, bits: int, number: int) -> dict[str, Any]:
    """Real values for the attributes that make the instance a readable object of its IOD."""
    fixed: dict[str, Any] = {"SpecificCharacterSet": "ISO_IR 192", "SOPClassUID": sop_class_uid,
                             "Modality": modality, "InstanceNumber": str(number)}
    if bits:
        rows = cols = 4
        frames = 1
        fixed.update(Rows=rows, Columns=cols, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2",
                     BitsAllocated=bits, BitsStored=bits if bits < 16 else 12, HighBit=(bits if bits < 16 else 12) - 1,
                     PixelRepresentation=0, PixelData=b"\x00" * max(2, (rows * cols * frames * bits + 7) // 8))
    if modality == "SEG":
        fixed.update(SegmentationType="BINARY", NumberOfFrames="1", ImageType=["DERIVED", "PRIMARY"])
    if modality == "MG":
        fixed.update(PresentationIntentType="FOR PRESENTATION")
    if modality == "SR":
        fixed.update(ValueType="CONTAINER", ContinuityOfContent="SEPARATE")
    return fixed


def _apply_fixed(ds: Dataset, fixed: dict[str, Any]) -> None:
    for keyword, value in fixed.items():
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        vr = "OW" if keyword == "PixelData" and fixed.get("BitsAllocated", 8) > 8 else _vr(tag)
        ds.add_new(tag, "OB" if keyword == "PixelData" and vr != "OW" else vr, value)


def _issue_attributes(b: _Builder, ds: Dataset) -> None:
    """The attributes issue 12 found surviving, whatever the IOD lists."""
    for keyword in ("PatientBirthDateInAlternativeCalendar", "SecondaryReviewerName"):
        if keyword not in ds:
            b.mark(ds, (), keyword)
    if "CommentsOnTheScheduledProcedureStep" not in ds:
        b.text(ds, (), "CommentsOnTheScheduledProcedureStep", SPS_COMMENT)
    if "ScheduledProcedureStepSequence" not in ds:
        ds.ScheduledProcedureStepSequence = Sequence([Dataset()])
    step = ds.ScheduledProcedureStepSequence[0]
    path = ("ScheduledProcedureStepSequence",)
    if "CommentsOnTheScheduledProcedureStep" not in step:
        b.text(step, path, "CommentsOnTheScheduledProcedureStep", SPS_COMMENT)
    for keyword in ("ScheduledPerformingPhysicianName", "ScheduledProcedureStepStartDate",
                    "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID"):
        if keyword not in step:
            b.mark(step, path, keyword)


# -- the Comprehensive SR content tree ------------------------------------------------------------------------
def _sr_item(b: _Builder, path: tuple[str, ...], relationship: str | None, value_type: str) -> Dataset:
    item = Dataset()
    if relationship:
        item.RelationshipType = relationship
    item.ValueType = value_type
    b.item.sr_value_types[value_type] += 1
    concept = Dataset()
    for keyword in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"):
        b.mark(concept, (*path, "ConceptNameCodeSequence"), keyword)
    item.ConceptNameCodeSequence = Sequence([concept])
    if value_type == "CONTAINER":
        item.ContinuityOfContent = "SEPARATE"
    b.mark(item, path, "ObservationDateTime")
    b.mark(item, path, "ObservationUID")
    return item


def _sr_content(b: _Builder, ds: Dataset) -> None:
    """A radiology report: observer context, the report text, findings with codes, a measurement, images."""
    ds.ValueType = "CONTAINER"
    b.item.sr_value_types["CONTAINER"] += 1
    concept = Dataset()
    for keyword in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"):
        b.mark(concept, ("ConceptNameCodeSequence",), keyword)
    ds.ConceptNameCodeSequence = Sequence([concept])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2000"
    ds.ContentTemplateSequence = Sequence([template])
    top: tuple[str, ...] = ("ContentSequence",)
    inner = (*top, "ContentSequence")
    deepest = (*inner, "ContentSequence")
    children: list[Dataset] = []

    def add(path: tuple[str, ...], relationship: str, value_type: str, keyword: str | None) -> Dataset:
        item = _sr_item(b, path, relationship, value_type)
        if keyword:
            b.mark(item, path, keyword)
        return item

    children.append(add(top, "HAS OBS CONTEXT", "PNAME", "PersonName"))
    children.append(add(top, "HAS OBS CONTEXT", "UIDREF", "UID"))
    children.append(add(top, "HAS OBS CONTEXT", "DATE", "Date"))
    children.append(add(top, "HAS OBS CONTEXT", "DATETIME", "DateTime"))
    children.append(add(top, "HAS OBS CONTEXT", "TIME", "Time"))
    report = _sr_item(b, top, "CONTAINS", "TEXT")
    b.text(report, top, "TextValue", REPORT_TEXT)
    children.append(report)

    findings = _sr_item(b, top, "CONTAINS", "CONTAINER")
    found: list[Dataset] = []
    note = _sr_item(b, inner, "CONTAINS", "TEXT")
    b.text(note, inner, "TextValue", "Nodule discussed with Dr Brown and Jane Doe on 01/02/1960")
    found.append(note)
    code = _sr_item(b, inner, "CONTAINS", "CODE")
    coded = Dataset()
    for keyword in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"):
        b.mark(coded, (*inner, "ConceptCodeSequence"), keyword)
    code.ConceptCodeSequence = Sequence([coded])
    found.append(code)
    num = _sr_item(b, inner, "CONTAINS", "NUM")
    measured = Dataset()
    measured.NumericValue = "12.5"
    unit = Dataset()
    unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "mm", "UCUM", "millimeter"
    measured.MeasurementUnitsCodeSequence = Sequence([unit])
    num.MeasuredValueSequence = Sequence([measured])
    scoord = _sr_item(b, deepest, "INFERRED FROM", "SCOORD")
    scoord.GraphicType = "POINT"
    scoord.GraphicData = [1.0, 2.0]
    image = _sr_item(b, (*deepest, "ContentSequence"), "SELECTED FROM", "IMAGE")
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT
    b.mark(ref, (*deepest, "ContentSequence", "ReferencedSOPSequence"), "ReferencedSOPInstanceUID")
    image.ReferencedSOPSequence = Sequence([ref])
    scoord.ContentSequence = Sequence([image])
    num.ContentSequence = Sequence([scoord])
    found.append(num)
    found.append(add(inner, "CONTAINS", "PNAME", "PersonName"))
    found.append(add(inner, "CONTAINS", "DATE", "Date"))
    found.append(add(inner, "CONTAINS", "UIDREF", "UID"))
    findings.ContentSequence = Sequence(found)
    children.append(findings)

    picture = _sr_item(b, top, "CONTAINS", "IMAGE")
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT
    b.mark(ref, (*top, "ReferencedSOPSequence"), "ReferencedSOPInstanceUID")
    picture.ReferencedSOPSequence = Sequence([ref])
    children.append(picture)
    ds.ContentSequence = Sequence(children)


# -- the vendor file ------------------------------------------------------------------------------------------
_CREATORS: Final = ("SIEMENS CSA HEADER", "SIEMENS MED", "GEMS_ACQU_01", "GEMS_PARM_01", "Philips Imaging DD 001",
                    "Philips MR Imaging DD 001", "TOSHIBA_MEC_CT3", "ELSCINT1", "AGFA", "HOSPITAL PACS 2.1")
_GROUPS: Final = (0x0009, 0x0019, 0x0021, 0x0029, 0x0043, 0x2001, 0x2005, 0x7005, 0x0011, 0x0033)
_PRIVATE_VRS: Final = ("LO", "SH", "LT", "PN", "CS", "UT", "DA", "DT", "TM", "UI", "ST", "OB", "UN", "DS", "US", "SQ")


def _private_value(b: _Builder, vr: str) -> tuple[Any, str | None]:
    if vr in ("OB", "UN"):
        token = b.values.token()
        return f"{token} Jane Doe 12345678 ".encode(), token
    if vr in ("DS", "US"):
        return _NUMBERS[vr], None
    value, marker, _ = b.values.value(vr)
    return value, marker


def _private(b: _Builder, ds: Dataset, path: tuple[str, ...], creators: tuple[tuple[int, str], ...],
             per_block: int) -> None:
    for group, creator in creators:
        block = ds.private_block(group, creator, create=True)
        for offset in range(per_block):
            vr = _PRIVATE_VRS[offset % len(_PRIVATE_VRS)]
            keyword = f"{creator}:{group:04X},xx{offset + 0x10:02X}"
            if vr == "SQ":
                inner = Dataset()
                inner.PatientName = f"{b.values.token()}^TEST"
                b.item.markers.append(Marker(str(inner.PatientName).split("^")[0], (*path, keyword), "PatientName",
                                             "PN", "private"))
                _private(b, inner, (*path, keyword), ((group, creator),), 4)
                block.add_new(offset + 0x10, "SQ", Sequence([inner]))
                continue
            value, marker = _private_value(b, vr)
            block.add_new(offset + 0x10, vr, value)
            if marker:
                b.item.markers.append(Marker(marker, path, keyword, vr, "private"))


def _vendor(values: _Values, number: int) -> CorpusItem:
    """A CT instance of a vendor: the mandatory modules, and private blocks at top level and in sequences."""
    ds = Dataset()
    item = CorpusItem(VENDOR, CT, ds, instance_number=number)
    b = _Builder(values, item)
    fixed = _fixed(CT, "CT", 16, number)
    b.fill(ds, iod_attributes(CT, usages=frozenset("M")), fixed)
    _apply_fixed(ds, fixed)
    _issue_attributes(b, ds)
    _private(b, ds, (), tuple(zip(_GROUPS, _CREATORS, strict=True)), 24)
    for keyword in ("ReferencedImageSequence", "ProcedureCodeSequence", "RequestAttributesSequence"):
        if keyword not in ds:
            setattr(ds, keyword, Sequence([Dataset()]))
        _private(b, ds[keyword].value[0], (keyword,), ((0x0019, "GEMS_ACQU_01"), (0x0029, "HOSPITAL PACS 2.1")), 8)
    _file_meta(ds, ImplicitVRLittleEndian)  # as old vendor exports are: private VRs are not in the file
    return item


def build_item(name: str, values: _Values, number: int) -> CorpusItem:
    sop_class, modality, bits = IODS[name]
    ds = Dataset()
    item = CorpusItem(name, sop_class, ds, instance_number=number)
    b = _Builder(values, item)
    fixed = _fixed(sop_class, modality, bits, number)
    skip = frozenset({"sr-document-content"}) if modality == "SR" else frozenset()
    b.fill(ds, iod_attributes(sop_class, skip_modules=skip), fixed)
    _apply_fixed(ds, fixed)
    if modality == "SR":
        _sr_content(b, ds)
    _issue_attributes(b, ds)
    # the patient's own name, so a cleaner that keeps free text can be seen to drop its parts
    (name_token,) = (m.value for m in item.markers if m.path == () and m.keyword == "PatientName")
    ds.PatientName = f"Doe^Jane^{name_token}"
    _file_meta(ds, ExplicitVRLittleEndian)
    return item


def build_corpus() -> list[CorpusItem]:
    """One instance per IOD family and the vendor file; markers are unique across the whole corpus."""
    values = _Values()
    items = [build_item(name, values, number) for number, name in enumerate(IODS, 1)]
    return [*items, _vendor(values, len(items) + 1)]


__all__ = ["IODS", "PHRASES", "VENDOR", "CorpusItem", "Marker", "build_corpus", "iod_attributes"]

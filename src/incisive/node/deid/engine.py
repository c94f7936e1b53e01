"""De-identify a dataset in place: PS3.15 Table E.1-1, the options in use, and fail-closed rules for the rest.

Three layers decide what happens to a public attribute (:mod:`incisive.node.deid.policy` resolves them once
per tag): the action of Table E.1-1 and its options; the reviewed retain list; otherwise its value
representation — names and free text go, dates shift, UIDs are remapped, numbers and pixels stay. The IOD's
attribute Types then shape how a change is made (PS3.15 E.1.1): a Type 1 attribute that must change gets a dummy
value of its VR, a Type 2 one is emptied, only an optional one is removed, and a sequence left without items
goes unless the IOD needs it. Structured content (SR ContentSequence) follows the Clean Structured Content
option (:mod:`incisive.node.deid.structured`).

The walk works on pydicom's raw element store: attributes that stay are never decoded, so a typical CT header
costs a dictionary lookup per element. Sequences are always recursed into. Descriptor cleaning waits until the
whole dataset has been walked, so the names it must drop include every person name the instance carries.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache

from pydicom._uid_dict import UID_dictionary  # the UID registry itself (read only)
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID
from pydicom.valuerep import PersonName

from incisive import __version__
from incisive.common.crypto import Pseudonymiser
from incisive.node.deid import structured
from incisive.node.deid.iod import PRESENT, REQUIRED, requirements
from incisive.node.deid.policy import BINARY_VRS, NUMERIC_VRS, Rule, keyword_of, resolve
from incisive.node.deid.retain import REGISTRY_ROOT, is_code_string
from incisive.node.deid.table import METHOD_CODES, STANDARD_EDITION
from incisive.node.deid.text import clean_text, name_parts

METHOD_TEXT = (
    f"incisive {__version__}: PS3.15 E.1-1 ({STANDARD_EDITION}) Basic Profile; Retain Longitudinal Temporal "
    "Information Modified Dates; Retain Patient Characteristics; Clean Descriptors; Clean Structured Content"
)[:64]

_STRING_DUMMY = {"PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000",
                 "AS": "000Y", "IS": "0", "DS": "0", "CS": "ANON", "UI": "2.25.0", "UR": "urn:x-deidentified"}
_OVERLAY_GROUPS = range(0x6000, 0x6020, 2)
_CURVE_GROUPS = range(0x5000, 0x5020, 2)
CONTENT_SEQUENCE = 0x0040A730


class DeidRejected(Exception):
    """The dataset cannot be de-identified safely (reason is PHI-free)."""


@dataclass(frozen=True)
class SafePrivate:
    """A private attribute kept by the profile's Retain Safe Private option (creator + group + element byte)."""

    creator: str
    group: int
    element: int

    @classmethod
    def parse(cls, spec: str) -> SafePrivate:
        """Parse ``'CREATOR:gggg,xxee'`` (``xx`` is the block, ignored; ``ee`` the element)."""
        try:
            creator, tag = spec.rsplit(":", 1)
            group, element = tag.split(",")
            return cls(creator.strip().upper(), int(group, 16), int(element, 16) & 0xFF)
        except ValueError:
            raise ValueError(f"safe private tag must look like 'CREATOR:gggg,xxee', got {spec!r}") from None


@dataclass
class DeidResult:
    """What one instance's de-identification did. Keywords and counts only: never a value."""

    pseudonym: str
    removed: Counter[str] = field(default_factory=Counter)  # beyond Table E.1-1, by keyword
    quarantine: str | None = None  # PHI-free reason to hold the instance back


@dataclass
class _Run:
    days: int
    required: dict[tuple[int, int], str]
    result: DeidResult
    names: set[str] = field(default_factory=set)
    to_clean: list[tuple[Dataset, int, str, int]] = field(default_factory=list)

    def level(self, parent: int, tag: int) -> str | None:
        """REQUIRED, PRESENT or None (optional) for the attribute ``tag`` inside the sequence ``parent``."""
        return self.required.get((parent, tag))


@lru_cache(maxsize=8192)
def shift_date(value: str, days: int) -> str:
    """Shift a DA (or the date part of a DT) by whole days; unparsable values become empty."""
    head, tail = value[:8], value[8:]
    try:
        shifted = date(int(head[:4]), int(head[4:6]), int(head[6:8])) + timedelta(days=days)
    except ValueError:
        return ""
    return shifted.strftime("%Y%m%d") + tail


def _values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (str, bytes, PersonName)) or not hasattr(value, "__iter__"):
        return [str(value)]
    return [str(v) for v in value]


class Deidentifier:
    """De-identifies datasets for one provider; thread-compatible, cheap to build per worker process.

    ``keep_text``: SR TEXT items are kept through the descriptor cleaner instead of removed.
    """

    def __init__(self, pseudonymiser: Pseudonymiser, safe_private: tuple[SafePrivate, ...] = (),
                 keep_text: bool = False) -> None:
        self.p = pseudonymiser
        self.safe_private = {(s.creator, s.group, s.element) for s in safe_private}
        self.keep_text = keep_text
        self._method_codes = [_code(value, meaning) for value, meaning in METHOD_CODES]  # built once, shared

    def patient_pseudonym(self, ds: Dataset) -> str:
        """HMAC of PatientID (issuer ignored: clinical systems rarely carry it, and linkage must match)."""
        patient_id = str(ds.get("PatientID", "") or "").strip()
        if patient_id:
            return self.p.patient(patient_id)
        name = str(ds.get("PatientName", "") or "").strip()
        if name:
            return self.p.patient(f"name:{name}|{ds.get('PatientBirthDate', '')}")
        return self.p.patient(f"study:{ds.get('StudyInstanceUID', '')}")

    def apply(self, ds: Dataset) -> DeidResult:
        """De-identify ``ds`` in place."""
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"):
            if not str(ds.get(keyword, "") or "").strip():
                raise DeidRejected(f"no {keyword}")
        pseudonym = self.patient_pseudonym(ds)
        run = _Run(self.p.day_offset(pseudonym), requirements(str(ds.SOPClassUID)), DeidResult(pseudonym))
        run.names.update(name_parts(str(ds.get("PatientName", "") or "")))
        if 0x00420011 in ds._dict:  # Encapsulated Document: PDF/CDA bytes cannot be cleaned here
            run.result.quarantine = "encapsulated document cannot be cleaned"
        self._walk(ds, 0, run)
        self._drop_orphan_groups(ds, run)
        for item, tag, vr, parent in run.to_clean:
            self._clean(item, tag, vr, parent, run)
        ds.PatientID = pseudonym
        ds.PatientName = pseudonym
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        ds.DeidentificationMethod = METHOD_TEXT
        ds.DeidentificationMethodCodeSequence = Sequence(self._method_codes)
        ds.file_meta = self._file_meta(ds)
        ds.preamble = None  # 128 bytes anyone may fill (a TIFF header, text): pydicom's writer then writes zeros
        return run.result

    def _file_meta(self, ds: Dataset) -> FileMetaDataset:
        return canonical_file_meta(ds)

    # -- the walk ---------------------------------------------------------------------------------------------
    def _walk(self, ds: Dataset, parent: int, run: _Run) -> None:
        private: list[int] = []
        for tag in list(ds._dict):
            if (tag >> 16) & 1:
                private.append(tag)
                continue
            if not tag & 0xFFFF:  # group length: retired, and wrong once attributes are removed
                del ds[tag]
                continue
            rule = resolve(tag)
            if rule.action == "K" and rule.vr != "SQ":
                if ds._dict[tag].VR is None:
                    ds[tag]  # read as implicit VR: decode now so it can be written in any transfer syntax
                continue
            self._apply(ds, tag, parent, rule, run)
        if private:
            self._private(ds, private)

    def _apply(self, ds: Dataset, tag: int, parent: int, rule: Rule, run: _Run) -> None:
        action, vr = rule.action, rule.vr
        if vr == "SQ":
            self._sequence(ds, tag, parent, action, run)
        elif vr == "PN" and action != "K":
            run.names.update(p for v in _values(ds[tag].value) for p in name_parts(v))
            self._drop(ds, tag, vr, parent, rule, run)
        elif action == "X":
            self._drop(ds, tag, vr, parent, rule, run)
        elif action in ("CS", "CSR"):
            wanted = action == "CSR" or run.level(parent, tag) == REQUIRED
            if not (wanted and all(is_code_string(v) for v in _values(ds[tag].value))):
                self._drop(ds, tag, vr, parent, rule, run)
        elif action == "Z":
            if run.level(parent, tag) == REQUIRED:
                self._dummy(ds, tag, vr, parent, run)
            else:
                self._empty(ds, tag, vr)
        elif action == "D":
            self._dummy(ds, tag, vr, parent, run)
        elif action == "U":
            self._uid(ds, tag, vr, rule)
        elif action == "S":
            self._shift(ds, tag, vr, parent, run)
        elif action == "C":
            run.to_clean.append((ds, tag, vr, parent))

    def _drop(self, ds: Dataset, tag: int, vr: str, parent: int, rule: Rule, run: _Run) -> None:
        """Remove, or empty (Type 2), or replace with a dummy (Type 1): never break the IOD."""
        level = run.level(parent, tag)
        if level == REQUIRED:
            self._dummy(ds, tag, vr, parent, run)
        elif level == PRESENT:
            self._empty(ds, tag, vr)
        else:
            del ds[tag]
        if rule.beyond_table:
            run.result.removed[keyword_of(tag)] += 1

    def _sequence(self, ds: Dataset, tag: int, parent: int, action: str, run: _Run) -> None:
        level = run.level(parent, tag)
        if action in ("X", "Z") and level != REQUIRED:
            if level == PRESENT:
                ds[tag].value = Sequence()
            else:
                del ds[tag]
            return
        items = ds[tag].value
        if tag == CONTENT_SEQUENCE:
            kept, reason = structured.clean_content(items, self.keep_text, run.result.removed,
                                                     frozenset(run.names))
            if reason and not run.result.quarantine:
                run.result.quarantine = reason
            if len(kept) != len(items):
                items = ds[tag].value = Sequence(kept)
        for item in items:
            self._walk(item, tag, run)
        left = [item for item in items if len(item._dict)]
        if len(left) != len(items):
            ds[tag].value = Sequence(left)
        if not left and level is None:
            del ds[tag]  # never leave a zero-item optional sequence behind

    def _empty(self, ds: Dataset, tag: int, vr: str) -> None:
        ds[tag] = DataElement(tag, vr, b"" if vr in BINARY_VRS else None)

    def _dummy(self, ds: Dataset, tag: int, vr: str, parent: int, run: _Run) -> None:
        if vr == "UI":
            value = ds[tag].value
            if value:
                self._uid(ds, tag, vr, resolve(tag))
            else:
                ds[tag] = DataElement(tag, vr, self.p.uid(f"dummy:{tag}"))
        elif vr in ("DA", "DT") and ds[tag].value:
            self._shift(ds, tag, vr, parent, run)
        elif vr in NUMERIC_VRS:
            ds[tag] = DataElement(tag, vr, 0)
        elif vr in BINARY_VRS:
            ds[tag] = DataElement(tag, vr, b"")
        else:
            ds[tag] = DataElement(tag, vr, _STRING_DUMMY.get(vr, "ANONYMIZED"))

    def _uid(self, ds: Dataset, tag: int, vr: str, rule: Rule) -> None:
        if vr != "UI":
            self._empty(ds, tag, vr)
            return
        value = ds[tag].value
        if not value:
            return
        # the standard's own registry (SOP classes, transfer syntaxes, coding schemes) names kinds, not things
        if isinstance(value, str):
            ds[tag].value = value if _registered(value, rule) else self.p.uid(value)
        else:
            ds[tag].value = [str(v) if _registered(str(v), rule) else self.p.uid(str(v)) for v in value]

    def _shift(self, ds: Dataset, tag: int, vr: str, parent: int, run: _Run) -> None:
        if vr not in ("DA", "DT"):
            self._empty(ds, tag, vr)
            return
        values = _values(ds[tag].value)
        if not values:
            return
        shifted = [shift_date(v, run.days) for v in values]
        if not all(shifted) and run.level(parent, tag) == REQUIRED:
            shifted = [v or _STRING_DUMMY[vr] for v in shifted]
        ds[tag] = DataElement(tag, vr, (shifted if len(shifted) > 1 else shifted[0]) or None)

    def _clean(self, ds: Dataset, tag: int, vr: str, parent: int, run: _Run) -> None:
        if tag not in ds._dict:
            return
        if vr in NUMERIC_VRS or vr in BINARY_VRS or vr in ("UI", "DA", "DT", "TM", "AS", "IS", "DS"):
            self._empty(ds, tag, vr)
            return
        names = frozenset(run.names)
        cleaned = [clean_text(v, names) for v in _values(ds[tag].value)]
        if not any(cleaned) and run.level(parent, tag) == REQUIRED:
            self._dummy(ds, tag, vr, parent, run)
            return
        value: str | list[str] | None = cleaned if len(cleaned) > 1 else (cleaned[0] if cleaned else None)
        ds[tag] = DataElement(tag, vr, value or None)

    def _drop_orphan_groups(self, ds: Dataset, run: _Run) -> None:
        """An overlay or curve group whose data went is removed whole (PS3.3 C.9.2, C.10.2)."""
        groups = {tag >> 16 for tag in ds._dict if 0x5000 <= tag >> 16 < 0x6020}
        for group in groups:
            if (group in _OVERLAY_GROUPS or group in _CURVE_GROUPS) and ((group << 16) | 0x3000) not in ds._dict:
                for tag in [t for t in ds._dict if t >> 16 == group]:
                    del ds[tag]
                run.result.removed["OverlayGroup" if group in _OVERLAY_GROUPS else "CurveGroup"] += 1

    def _private(self, ds: Dataset, tags: list[int]) -> None:
        """Remove private attributes except the safe-list; drop creators left without elements."""
        creators = private_creators(ds, tags)
        used: set[int] = set()
        for tag in tags:
            element = tag & 0xFFFF
            if element < 0x1000:
                continue
            group = tag >> 16
            creator_tag = (group << 16) | (element >> 8)
            key = (creators.get(creator_tag, ""), group, element & 0xFF)
            if self.safe_private and key in self.safe_private:
                used.add(creator_tag)
            else:
                del ds[tag]
        for tag in tags:
            element = tag & 0xFFFF
            if element < 0x1000 and tag not in used and tag in ds._dict:
                del ds[tag]


def _registered(value: str, rule: Rule) -> bool:
    """A UID of the DICOM registry; under the root only for attributes Table E.1-1 does not remap itself."""
    return value in UID_dictionary or (rule.beyond_table and value.startswith(REGISTRY_ROOT))


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


__all__ = ["DeidRejected", "DeidResult", "Deidentifier", "SafePrivate", "shift_date"]


def canonical_file_meta(ds: Dataset) -> FileMetaDataset:
    """The file meta the de-identifier writes: SOP class and instance from the dataset, its transfer syntax, our
    implementation (nothing a sender put there). The verify door writes the same, so an instance stores the same
    bytes whether it came by STOW-RS (the provider's file) or by C-STORE (pynetdicom's rebuilt meta)."""
    old = getattr(ds, "file_meta", None)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if old is not None and "TransferSyntaxUID" in old:
        meta.TransferSyntaxUID = old.TransferSyntaxUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"INCISIVE_{__version__}"[:16]
    return meta


def private_creators(ds: Dataset, tags: list[int]) -> dict[int, str]:
    """Private creator element (gggg,00xx) → its creator name, upper-cased, among the private ``tags`` of ``ds``
    (PS3.5 7.8.1); a private element (gggg,xxee) belongs to the creator at (gggg,00xx)."""
    creators: dict[int, str] = {}
    for tag in tags:
        if 0x10 <= (tag & 0xFFFF) <= 0xFF:
            value = ds[tag].value
            creators[tag] = str(value).strip().upper() if isinstance(value, str) else ""
    return creators

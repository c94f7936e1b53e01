"""Apply the PS3.15 Annex E action table to a dataset, in place, with keyed pseudonyms, UIDs and date shifts.

The walk works on pydicom's raw element store: attributes the table keeps are never decoded, so a typical
CT header costs a dictionary lookup per element. Sequences are always recursed into (a kept sequence can
hold listed attributes, e.g. ReferencedSOPInstanceUID inside ReferencedImageSequence).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import ClassVar

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from incisive import __version__
from incisive.common.crypto import Pseudonymiser
from incisive.node.deid.table import METHOD_CODES, STANDARD_EDITION, action_for
from incisive.node.deid.text import clean_text

METHOD_TEXT = (
    f"incisive {__version__}: PS3.15 E.1-1 ({STANDARD_EDITION}) Basic Profile; Retain Longitudinal Temporal "
    "Information Modified Dates; Retain Patient Characteristics; Clean Descriptors"
)[:64]

_STRING_DUMMY = {"PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000",
                 "AS": "000Y", "IS": "0", "DS": "0", "CS": "ANON"}
_NUMERIC_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"}
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}


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


@lru_cache(maxsize=8192)
def shift_date(value: str, days: int) -> str:
    """Shift a DA (or the date part of a DT) by whole days; unparsable values become empty."""
    head, tail = value[:8], value[8:]
    try:
        shifted = date(int(head[:4]), int(head[4:6]), int(head[6:8])) + timedelta(days=days)
    except ValueError:
        return ""
    return shifted.strftime("%Y%m%d") + tail


def _vr_of(ds: Dataset, tag: BaseTag) -> str:
    raw = ds._dict[tag]
    vr = raw.VR
    if vr is None:
        # read as implicit VR: decode now so the element can be written in any transfer syntax
        vr = ds[tag].VR
    if vr in ("UN", "OB or OW", "US or SS", "US or OW", "US or SS or OW"):
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    return str(vr)


class Deidentifier:
    """De-identifies datasets for one provider; thread-compatible, cheap to build per worker process."""

    def __init__(self, pseudonymiser: Pseudonymiser, safe_private: tuple[SafePrivate, ...] = ()) -> None:
        self.p = pseudonymiser
        self.safe_private = {(s.creator, s.group, s.element) for s in safe_private}
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

    def apply(self, ds: Dataset) -> str:
        """De-identify ``ds`` in place; returns the patient pseudonym."""
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"):
            if not str(ds.get(keyword, "") or "").strip():
                raise DeidRejected(f"no {keyword}")
        pseudonym = self.patient_pseudonym(ds)
        days = self.p.day_offset(pseudonym)
        self._walk(ds, days)
        ds.PatientID = pseudonym
        ds.PatientName = pseudonym
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        ds.DeidentificationMethod = METHOD_TEXT
        ds.DeidentificationMethodCodeSequence = Sequence(self._method_codes)
        ds.file_meta = self._file_meta(ds)
        return pseudonym

    def _file_meta(self, ds: Dataset) -> FileMetaDataset:
        old = getattr(ds, "file_meta", None)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if old is not None and "TransferSyntaxUID" in old:
            meta.TransferSyntaxUID = old.TransferSyntaxUID
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"INCISIVE_{__version__}"[:16]
        return meta

    # -- the walk ---------------------------------------------------------------------------------------------
    def _walk(self, ds: Dataset, days: int) -> None:
        private: list[int] = []
        for tag in list(ds._dict):
            group = tag >> 16
            if group & 1:
                private.append(tag)
                continue
            if not tag & 0xFFFF:  # group length: retired, and wrong once attributes are removed
                del ds[tag]
                continue
            action = action_for(tag)
            vr = _vr_of(ds, tag)
            if vr == "SQ":
                self._sequence(ds, tag, action, days)
                continue
            if action is None or action == "K":
                continue
            handler = self._handlers.get(action)
            if handler is not None:
                handler(self, ds, tag, vr, days)
        if private:
            self._private(ds, private)

    def _sequence(self, ds: Dataset, tag: int, action: str | None, days: int) -> None:
        if action == "X":
            del ds[tag]
            return
        if action == "Z":
            ds[tag].value = Sequence()
            return
        for item in ds[tag].value:
            self._walk(item, days)

    def _remove(self, ds: Dataset, tag: int, vr: str, days: int) -> None:
        del ds[tag]

    def _empty(self, ds: Dataset, tag: int, vr: str, days: int) -> None:
        ds[tag] = DataElement(tag, vr, b"" if vr in _BINARY_VRS else None)

    def _dummy(self, ds: Dataset, tag: int, vr: str, days: int) -> None:
        if vr == "UI":
            self._uid(ds, tag, vr, days)
        elif vr in ("DA", "DT"):
            self._shift(ds, tag, vr, days)
        elif vr in _NUMERIC_VRS:
            ds[tag] = DataElement(tag, vr, 0)
        elif vr in _BINARY_VRS:
            ds[tag] = DataElement(tag, vr, b"")
        else:
            ds[tag] = DataElement(tag, vr, _STRING_DUMMY.get(vr, "ANONYMIZED"))

    def _uid(self, ds: Dataset, tag: int, vr: str, days: int) -> None:
        if vr != "UI":
            self._empty(ds, tag, vr, days)
            return
        value = ds[tag].value
        if not value:
            return
        if isinstance(value, str):
            ds[tag].value = self.p.uid(value)
        else:
            ds[tag].value = [self.p.uid(str(v)) for v in value]

    def _shift(self, ds: Dataset, tag: int, vr: str, days: int) -> None:
        if vr not in ("DA", "DT"):
            self._empty(ds, tag, vr, days)
            return
        value = ds[tag].value
        if not value:
            return
        values = [value] if isinstance(value, str) else list(value)
        ds[tag] = DataElement(tag, vr, [shift_date(str(v), days) for v in values] if len(values) > 1
                              else shift_date(str(values[0]), days))

    def _clean(self, ds: Dataset, tag: int, vr: str, days: int) -> None:
        if vr in _NUMERIC_VRS or vr in _BINARY_VRS or vr in ("UI", "DA", "DT", "TM", "AS", "IS", "DS"):
            self._empty(ds, tag, vr, days)
            return
        value = ds[tag].value
        if isinstance(value, str):
            ds[tag] = DataElement(tag, vr, clean_text(value) or None)
        elif value:
            ds[tag] = DataElement(tag, vr, [clean_text(str(v)) for v in value])

    _handlers: ClassVar[dict[str, Callable[[Deidentifier, Dataset, int, str, int], None]]] = {
        "X": _remove,
        "Z": _empty,
        "D": _dummy,
        "U": _uid,
        "S": _shift,
        "C": _clean,
    }

    def _private(self, ds: Dataset, tags: list[int]) -> None:
        """Remove private attributes except the safe-list; drop creators left without elements."""
        creators: dict[int, str] = {}
        for tag in tags:
            if 0x10 <= (tag & 0xFFFF) <= 0xFF:
                value = ds[tag].value
                creators[tag] = str(value).strip().upper() if isinstance(value, str) else ""
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


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


__all__ = ["DeidRejected", "Deidentifier", "SafePrivate", "shift_date"]

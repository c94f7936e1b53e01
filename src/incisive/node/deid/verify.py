"""The Central Node's door: check that an instance was de-identified by its provider, without re-doing it.

A Central Node tenant does not hold the provider's pseudonym key, so it cannot pseudonymise; it must refuse what
the provider's de-identifier (:mod:`incisive.node.deid.engine`, run by ``incisive upload``) would not have let
through. :func:`check_deidentified` answers a fixed, PHI-free reason naming an attribute keyword (never a value),
or ``None``:

* ``PatientIdentityRemoved`` is ``YES`` and ``DeidentificationMethod`` (or its code sequence) is present;
* no attribute that the engine removes is present with a value, at any depth: Table E.1-1's X (remove) and Z
  (zero length) attributes, and the fail-closed rules by VR (names, free text, unknown public tags, code strings
  outside the CS repertoire or not required by the IOD). Where the IOD needs the attribute the engine writes a
  dummy (Type 1) or leaves it empty (Type 2), so exactly those values are accepted there, and any value of the
  kinds the engine derives rather than writes (UIDs, dates) under Type 1;
* SR TEXT content items only with ``keep_text`` (the node's ``sr_keep_text``);
* no private attribute outside the safe-private list (and no private creator left without a kept element);
* no file meta element the engine does not write, and an empty preamble.

What the check cannot see: whether UIDs were remapped, dates shifted or descriptors cleaned (those keep a value of
the same kind). An instance that passes but may carry burned-in text (``BurnedInAnnotation`` YES where the IOD keeps
it, a quarantine modality, a Secondary Capture or ultrasound SOP class), an encapsulated document or SR content that
cannot be judged is quarantined by the door as a node's would be (:func:`held_back`); a ``BurnedInAnnotation`` the
engine would have removed (the IOD does not require it) is refused like any other leftover.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from incisive.node.deid.burned_in import quarantine_reason
from incisive.node.deid.engine import SafePrivate, private_creators
from incisive.node.deid.iod import REQUIRED, requirements
from incisive.node.deid.policy import BINARY_VRS, NUMERIC_VRS, Rule, keyword_of, resolve
from incisive.node.deid.retain import is_code_string
from incisive.node.deid.structured import KEPT_VALUE_TYPES

_PATIENT_ID: Final = 0x00100020
_PATIENT_NAME: Final = 0x00100010
# what the engine writes itself after its walk (de-identification method, the pseudonym)
_WRITTEN: Final = frozenset({_PATIENT_ID, _PATIENT_NAME, 0x00120062, 0x00280303, 0x00120063, 0x00120064})
_TEXT_VALUE: Final = 0x0040A160
_VALUE_TYPE: Final = 0x0040A040
_CONTENT_SEQUENCE: Final = 0x0040A730
_ENCAPSULATED_DOCUMENT: Final = 0x00420011
# file meta elements the engine writes (group length, version, SOP class/instance, transfer syntax, implementation)
_FILE_META: Final = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})
_DUMMY: Final = {"PN": "ANONYMOUS", "TM": "000000", "AS": "000Y", "IS": "0", "DS": "0", "CS": "ANON",
                 "UR": "urn:x-deidentified"}
_DERIVED_VRS: Final = frozenset({"UI", "DA", "DT"})  # a Type 1 value the engine remaps or shifts, not replaces
_REMOVING: Final = frozenset({"X", "Z"})


def _reason(what: str, why: str) -> str:
    return f"not de-identified: {what} present ({why})"


def check_deidentified(ds: Dataset, safe_private: Iterable[SafePrivate] = (), keep_text: bool = False) -> str | None:
    """``None`` when ``ds`` looks de-identified by the engine with these options, else a PHI-free reason.

    ``safe_private`` and ``keep_text``: the options the provider de-identified with (a tenant's settings
    ``safe_private_tags`` and ``sr_keep_text``); anything they would not keep is refused."""
    if str(ds.get("PatientIdentityRemoved", "") or "").strip().upper() != "YES":
        return "not de-identified: PatientIdentityRemoved is not YES"
    if not str(ds.get("DeidentificationMethod", "") or "").strip() and not ds.get("DeidentificationMethodCodeSequence"):
        return "not de-identified: no DeidentificationMethod or DeidentificationMethodCodeSequence"
    if not str(ds.get("PatientID", "") or "").strip():
        return "not de-identified: no PatientID (the de-identifier writes the patient's pseudonym there)"
    preamble = getattr(ds, "preamble", None)
    if preamble and any(preamble):
        return "not de-identified: the file preamble is not empty (the engine writes zeros)"
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in meta._dict:
            if tag not in _FILE_META and _has_value(meta, tag):
                return _reason(f"file meta {keyword_of(tag)}", "not written by the de-identifier")
    safe = {(s.creator, s.group, s.element) for s in safe_private}
    return _walk(ds, 0, requirements(str(ds.get("SOPClassUID", "") or "")), safe, keep_text)


def _walk(ds: Dataset, parent: int, required: dict[tuple[int, int], str], safe: set[tuple[str, int, int]],
          keep_text: bool) -> str | None:
    private: list[int] = []
    for tag in list(ds._dict):
        if (tag >> 16) & 1:
            private.append(tag)
            continue
        if not tag & 0xFFFF:  # group length: carries nothing
            continue
        if parent == 0 and tag in _WRITTEN:
            continue
        rule = resolve(tag)
        level = required.get((parent, tag))
        if rule.vr == "SQ":
            problem = _sequence(ds, tag, rule, level, required, safe, keep_text)
        elif tag == _TEXT_VALUE and keep_text:
            problem = None
        else:
            problem = _element(ds, tag, rule, level)
        if problem:
            return problem
    return _private(ds, private, safe) if private else None


def _sequence(ds: Dataset, tag: int, rule: Rule, level: str | None, required: dict[tuple[int, int], str],
              safe: set[tuple[str, int, int]], keep_text: bool) -> str | None:
    items = ds[tag].value or []
    if rule.action in _REMOVING and level != REQUIRED and len(items):
        return _reason(keyword_of(tag), _why(rule))
    for item in items:
        if tag == _CONTENT_SEQUENCE and not keep_text and _value_type(item) == "TEXT":
            return _reason("a TEXT content item", "removed by Clean Structured Content")
        problem = _walk(item, tag, required, safe, keep_text)
        if problem:
            return problem
    return None


def _value_type(item: Dataset) -> str:
    return str(item[_VALUE_TYPE].value or "").strip().upper() if _VALUE_TYPE in item else ""


def _element(ds: Dataset, tag: int, rule: Rule, level: str | None) -> str | None:
    action, vr = rule.action, rule.vr
    if vr == "PN" and action != "K":
        action = "X"
    if action in ("CS", "CSR"):
        wanted = action == "CSR" or level == REQUIRED
        if wanted and all(is_code_string(v) for v in _values(ds[tag].value)):
            return None
        action = "X"
    if action not in _REMOVING or not _has_value(ds, tag):
        return None
    if level == REQUIRED and (vr in _DERIVED_VRS or _is_dummy(ds[tag].value, vr)):
        return None
    return _reason(keyword_of(tag), _why(rule))


def _why(rule: Rule) -> str:
    if rule.beyond_table:
        return "removed by the de-identifier's rules for its value representation"
    return "emptied by the PS3.15 profile" if rule.action == "Z" else "removed by the PS3.15 profile"


def _has_value(ds: Dataset, tag: int) -> bool:
    elem = ds._dict[BaseTag(tag)]
    if isinstance(elem, RawDataElement):
        return bool(elem.length) and elem.value not in (b"", b" ", b"\x00")
    value = elem.value
    return value is not None and value != "" and value != b"" and not (isinstance(value, list) and not value)


def _values(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (str, bytes, PersonName)) or not hasattr(value, "__iter__"):
        return [str(value)]
    return [str(v) for v in value]


def _is_dummy(value: Any, vr: str) -> bool:
    if vr in NUMERIC_VRS:
        return all(str(v).strip() in ("0", "0.0") for v in _values(value))
    if vr in BINARY_VRS:
        return not value
    return all(v.strip() == _DUMMY.get(vr, "ANONYMIZED") for v in _values(value))


def _private(ds: Dataset, tags: list[int], safe: set[tuple[str, int, int]]) -> str | None:
    creators = private_creators(ds, tags)
    used: set[int] = set()
    for tag in tags:
        element = tag & 0xFFFF
        if element < 0x1000:
            continue
        creator_tag = ((tag >> 16) << 16) | (element >> 8)
        if (creators.get(creator_tag, ""), tag >> 16, element & 0xFF) not in safe:
            return _reason(f"private attribute {keyword_of(tag)}", "private attributes are removed")
        used.add(creator_tag)
    for tag in tags:
        if (tag & 0xFFFF) < 0x1000 and tag not in used:
            return _reason(f"private attribute {keyword_of(tag)}", "private attributes are removed")
    return None


def held_back(ds: Dataset, modalities: Iterable[str]) -> str | None:
    """Why the door quarantines a de-identified instance, as a node's door would (PHI-free), or ``None``: burned-in
    text risk (:func:`incisive.node.deid.quarantine_reason`), an encapsulated document, SR content of a value type
    that cannot be judged."""
    reason = quarantine_reason(ds, modalities)
    if reason:
        return reason
    if _ENCAPSULATED_DOCUMENT in ds._dict:
        return "encapsulated document cannot be cleaned"
    return _unknown_content(ds)


def _unknown_content(ds: Dataset) -> str | None:
    for tag in list(ds._dict):
        if tag >> 16 & 1 or (ds._dict[tag].VR or resolve(tag).vr) != "SQ":
            continue
        for item in ds[tag].value or []:
            value_type = _value_type(item)
            if tag == _CONTENT_SEQUENCE and value_type and value_type not in KEPT_VALUE_TYPES | {"TEXT"}:
                return "structured report content item of an unknown value type"
            reason = _unknown_content(item)
            if reason:
                return reason
    return None

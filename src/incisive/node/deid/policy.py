"""One decision per public tag: what de-identification does to it, and whether Table E.1-1 said so.

Resolved once per tag and cached (a node sees a few thousand distinct tags): first Table E.1-1 with the options
in use (:mod:`incisive.node.deid.table`), then the reviewed retain list (:mod:`incisive.node.deid.retain`),
then the attribute's value representation. The fail-closed rules by VR:

* PN: removed (or dummy/empty where the IOD needs it; :mod:`incisive.node.deid.iod`);
* DA, DT: shifted with the patient's offset (Retain Longitudinal option), unparsable values removed;
* TM: kept (the option shifts whole days, so times of day stay true);
* UI: remapped with the keyed UID map, except registry UIDs and attributes that name a kind of thing;
* CS: kept where the IOD requires a value (Type 1/1C) and it fits the CS repertoire, else removed (emptied where
  Type 2); retained code strings are checked against the repertoire too;
* AE, LO, LT, SH, ST, UC, UR, UT: free text, removed;
* numbers (DS, IS, US, SS, UL, SL, FL, FD, SV, UV, AT), ages (AS), binary data (OB, OW, OF, OD, OL, OV): kept;
* an attribute the dictionary does not know, or of VR UN: removed.
Sequences are recursed into; an action of X or Z on a sequence removes or empties it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Final

from pydicom.datadict import dictionary_VR, keyword_for_tag

from incisive.node.deid.retain import CLASS_UIDS, RETAIN
from incisive.node.deid.table import action_for

NUMERIC_VRS: Final = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT", "DS", "IS"})
BINARY_VRS: Final = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
FREE_TEXT_VRS: Final = frozenset({"AE", "LO", "LT", "SH", "ST", "UC", "UR", "UT"})
_KEPT_BY_VR: Final = NUMERIC_VRS | {"AS", "TM", "OB", "OW", "OF", "OD", "OL", "OV"}


@dataclass(frozen=True)
class Rule:
    """``action``: K keep, X remove, Z empty, D dummy, U remap UID, S shift date, C clean; CS keep a code string
    the IOD requires (Type 1), CSR keep a retained code string."""

    action: str
    vr: str
    beyond_table: bool  # True when Table E.1-1 does not list the attribute (its removals are counted)


def _dictionary_vr(tag: int) -> str:
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return ""
    # ambiguous VRs (US or SS, OB or OW): the choice never changes the action
    return vr.split(" or ")[0]


@cache
def resolve(tag: int) -> Rule:
    """The rule for a public (even group) attribute."""
    vr = _dictionary_vr(tag)
    action = action_for(tag)
    if action is not None:
        return Rule(action, vr, False)
    keyword = keyword_of(tag)
    if keyword in RETAIN:
        # a retained code string is still checked: a value outside the CS repertoire is free text
        return Rule("CSR" if vr == "CS" and RETAIN[keyword][0] == "K" else RETAIN[keyword][0], vr, True)
    if vr == "SQ" or vr in _KEPT_BY_VR:
        return Rule("K", vr, True)
    if vr == "UI":
        return Rule("K" if keyword in CLASS_UIDS else "U", vr, True)
    if vr in ("DA", "DT"):
        return Rule("S", vr, True)
    if vr == "CS":
        return Rule("CS", vr, True)
    return Rule("X", vr or "UN", True)  # PN, free text, UN, unknown to the dictionary


@cache
def keyword_of(tag: int) -> str:
    """The dictionary keyword, or ``(gggg,eeee)`` for a tag the dictionary does not know."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"

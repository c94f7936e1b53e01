"""Clean Structured Content (PS3.15 E.3.3, option 113104) for SR content trees.

A content item's value is judged by its value type (PS3.3 C.17.3 Table C.17-6 "Value Type"):
* TEXT: removed by default (free text is where identifiers hide in reports); with ``keep_text`` the text goes
  through the descriptor cleaner and the item is removed when nothing is left;
* PNAME: the name is replaced (the walk's PN rule: a dummy, the item's PersonName is Type 1);
* DATE, DATETIME: shifted with the patient's offset; TIME kept; UIDREF remapped (the walk's VR rules);
* CODE, NUM, SCOORD, SCOORD3D, TCOORD, CONTAINER, IMAGE, COMPOSITE, WAVEFORM, TABLE: kept (their coded
  concepts and numbers carry no free text), and walked like any other item.
An item of any other value type cannot be judged: the instance is quarantined, not stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pydicom.dataset import Dataset

from incisive.node.deid.text import clean_text

KEPT_VALUE_TYPES = frozenset({"CODE", "NUM", "SCOORD", "SCOORD3D", "TCOORD", "CONTAINER", "IMAGE", "COMPOSITE",
                              "WAVEFORM", "TABLE", "PNAME", "DATE", "DATETIME", "TIME", "UIDREF"})
_VALUE_TYPE = 0x0040A040
_TEXT_VALUE = 0x0040A160


def clean_content(items: Iterable[Dataset], keep_text: bool, removed: Counter[str],
                  names: frozenset[str] = frozenset()) -> tuple[list[Dataset], str | None]:
    """The items to keep, and a PHI-free quarantine reason when an item cannot be judged.

    ``names``: name parts the cleaner must drop from kept text (the patient's, and person names seen so far).
    """
    kept: list[Dataset] = []
    reason: str | None = None
    for item in items:
        value_type = str(item.get(_VALUE_TYPE).value if _VALUE_TYPE in item else "").strip().upper()
        if value_type == "TEXT":
            if keep_text and _TEXT_VALUE in item:
                text = clean_text(str(item[_TEXT_VALUE].value or ""), names)
                if text:
                    item[_TEXT_VALUE].value = text
                    kept.append(item)
                    continue
            removed["TextValue"] += 1
            continue
        if value_type and value_type not in KEPT_VALUE_TYPES:
            reason = "structured report content item of an unknown value type"
        kept.append(item)
    return kept, reason

"""QIDO-RS (PS3.18 10.6): query parameters → catalogue search → DICOM JSON (application/dicom+json).

Keys are keywords or 8-digit tags; ``limit``/``offset``/``includefield``/``fuzzymatching`` are reserved.
Unknown keys, malformed dates and bad limits give HTTP 400 with a message naming the key. Fuzzy matching is
not supported: ``fuzzymatching=true`` is ignored and answered with a ``Warning`` header.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from incisive.node.home import Node
from incisive.node.net import query

MAX_LIMIT = 10000
DEFAULT_LIMIT = 1000
RESERVED = {"limit", "offset", "includefield", "fuzzymatching"}
LEVEL = {"studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}


class QidoError(ValueError):
    pass


@dataclass
class Qido:
    level: str
    filters: dict[str, str] = field(default_factory=dict)
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    include: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)


def _keyword(key: str) -> str:
    text = key.strip()
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        keyword = keyword_for_tag(int(text, 16))
        if keyword:
            return str(keyword)
    elif tag_for_keyword(text) is not None:
        return text
    raise QidoError(f"unknown query key '{text[:40]}': not a DICOM keyword or tag")


def _int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise QidoError(f"{name} must be an integer") from None
    if not low <= number <= high:
        raise QidoError(f"{name} must be between {low} and {high}")
    return number


def parse(level: str, params: Iterable[tuple[str, str]], path_filters: dict[str, str]) -> Qido:
    q = Qido(level, dict(path_filters))
    known = query.attributes(level)
    for key, value in params:
        name = key.strip().lower()
        if name == "limit":
            q.limit = _int("limit", value, 1, MAX_LIMIT)
        elif name == "offset":
            q.offset = _int("offset", value, 0, 10**9)
        elif name == "includefield":
            for item in value.split(","):
                q.include.add("all" if item.strip().lower() == "all" else _keyword(item))
        elif name == "fuzzymatching":
            if value.strip().lower() == "true":
                q.warnings.append('299 incisive "fuzzymatching is not supported; exact matching used"')
            elif value.strip().lower() != "false":
                raise QidoError("fuzzymatching must be true or false")
        else:
            keyword = _keyword(key)
            attr = known.get(keyword)
            if attr is None or attr.kind == "count":
                raise QidoError(f"{keyword} is not a supported matching key for {level.lower()} queries")
            if attr.kind in ("uid", "modalities"):
                value = value.replace(",", "\\")
            q.filters[keyword] = value
    return q


@lru_cache(maxsize=512)
def _tag_vr(keyword: str) -> tuple[str, str]:
    """``(8-hex-digit tag, VR)`` for a keyword; the dictionary lookups cost more than the rest of a result."""
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return f"{tag:08X}", dictionary_VR(tag)


def _element(vr: str, value: Any) -> dict[str, Any]:
    if value is None or value == [] or value == "":
        return {"vr": vr}
    values = value if isinstance(value, list) else [value]
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in values]}
    if vr in ("IS", "US", "UL", "SS", "SL"):
        return {"vr": vr, "Value": [int(v) for v in values]}
    return {"vr": vr, "Value": [str(v) for v in values]}


def to_json(row: dict[str, Any], base_url: str, level: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for keyword, value in row.items():
        if keyword.startswith("_"):
            continue
        tag, vr = _tag_vr(keyword)
        out[tag] = _element(vr, value)
    url = f"{base_url}/studies/{row['StudyInstanceUID']}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{row['SeriesInstanceUID']}"
    if level == "IMAGE":
        url += f"/instances/{row['SOPInstanceUID']}"
    out["00081190"] = {"vr": "UR", "Value": [url]}
    return dict(sorted(out.items()))


def run(node: Node, q: Qido, base_url: str) -> list[dict[str, Any]]:
    with node.catalogue.session() as s:
        rows = query.search(s, q.level, q.filters, limit=q.limit, offset=q.offset)
    return [to_json(r, base_url, q.level) for r in rows]

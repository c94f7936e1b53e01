"""C-FIND (Patient Root and Study Root) over the pseudonymised catalogue, via :mod:`incisive.node.net.query`.

Each pending response carries exactly the keys the request asked for: supported ones with the catalogue's
value, unsupported ones empty (PS3.4 C.4.1.1.3.1), plus QueryRetrieveLevel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from incisive.common.logging import get_logger
from incisive.node.home import Node
from incisive.node.net import query

log = get_logger("net.find")
PENDING = 0xFF00
SUCCESS = 0x0000
CANCELLED = 0xFE00
IDENTIFIER_MISMATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
PAGE = 500
_LEVELS = {"PATIENT": ("PATIENT", "STUDY", "SERIES", "IMAGE"), "STUDY": ("STUDY", "SERIES", "IMAGE")}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def _failure(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


def parse_identifier(model: str, identifier: Dataset) -> tuple[str, dict[str, str], list[str]]:
    """(level, matching filters, requested keywords) from a C-FIND identifier."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in _LEVELS[model]:
        raise query.QueryError(f"QueryRetrieveLevel must be one of {', '.join(_LEVELS[model])}")
    known = query.attributes(level)
    filters: dict[str, str] = {}
    requested: list[str] = []
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or (elem.tag.group == 0x0008 \
                and elem.tag.element == 0x0005):
            continue
        if elem.VR == "SQ":
            requested.append(keyword)
            continue
        requested.append(keyword)
        value = _text(elem.value)
        attr = known.get(keyword)
        if attr is not None and attr.kind != "count" and value:
            filters[keyword] = value
    return level, filters, requested


def _response(level: str, requested: list[str], row: dict[str, Any], charset: Any) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = level
    for keyword in requested:
        value = row.get(keyword)
        if isinstance(value, list):
            value = list(value) or None
        try:
            setattr(ds, keyword, "" if value is None else value)
        except (TypeError, ValueError):  # a key of a VR we cannot fill: return it empty
            setattr(ds, keyword, None)
    return ds


def run_find(node: Node, model: str, identifier: Dataset,
             cancelled: Callable[[], bool]) -> Iterator[tuple[int, Dataset | None]]:
    try:
        level, filters, requested = parse_identifier(model, identifier)
    except query.QueryError as exc:
        yield IDENTIFIER_MISMATCH, _failure(IDENTIFIER_MISMATCH, str(exc))
        return
    except Exception as exc:
        log.warning("C-FIND identifier unreadable: %s", type(exc).__name__)
        yield UNABLE_TO_PROCESS, _failure(UNABLE_TO_PROCESS, "cannot decode the identifier")
        return
    charset = identifier.get("SpecificCharacterSet")
    offset = 0
    matches = 0
    try:
        while True:
            with node.catalogue.session() as s:
                rows = query.search(s, level, filters, limit=PAGE, offset=offset)
            for row in rows:
                if cancelled():
                    yield CANCELLED, None
                    return
                matches += 1
                yield PENDING, _response(level, requested, row, charset)
            if len(rows) < PAGE:
                break
            offset += PAGE
    except query.QueryError as exc:
        yield IDENTIFIER_MISMATCH, _failure(IDENTIFIER_MISMATCH, str(exc))
        return
    except Exception as exc:
        log.error("C-FIND failed: %s", type(exc).__name__)
        yield UNABLE_TO_PROCESS, _failure(UNABLE_TO_PROCESS, "query failed")
        return
    log.info("C-FIND %s level: %d keys, %d matches", level, len(filters), matches)
    yield SUCCESS, None

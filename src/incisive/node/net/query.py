"""Attribute matching over the pseudonymised catalogue, shared by C-FIND (DIMSE) and QIDO-RS (DICOMweb).

PS3.4 C.2.2.2 matching on the attributes the catalogue holds: universal (empty), single value (case-sensitive,
no fuzzy matching), wildcard (``*``/``?``), UID list (``\\``-separated) and date range (``A-B``, ``A-``,
``-B``). Attributes de-identification removes (AccessionNumber, StudyTime …) are returned empty; a non-empty
filter on one of them matches nothing, since no stored instance has a value.

A search is two queries: the page of entities (filters, ``ORDER BY id``, limit/offset — all index-driven),
then the page's related counts and modalities restricted to the page's ids, so cost follows the page size,
not the catalogue size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from incisive.node.catalogue.models import Instance, Patient, Series, Study

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_DATE = re.compile(r"\d{8}")


class QueryError(ValueError):
    """A query the node cannot run; the message is PHI-free and names the offending key."""


@dataclass(frozen=True)
class Attr:
    keyword: str
    kind: str  # uid | str | pn | date | int | empty | count | modalities
    column: InstrumentedAttribute[Any] | None = None


_PATIENT = (
    Attr("PatientID", "str", Patient.pseudonym),
    Attr("PatientName", "pn", Patient.pseudonym),
    Attr("PatientSex", "str", Patient.sex),
    Attr("PatientBirthDate", "empty"),
)
_STUDY = (
    Attr("StudyInstanceUID", "uid", Study.study_uid),
    Attr("StudyDate", "date", Study.study_date),
    Attr("StudyDescription", "str", Study.description),
    Attr("StudyTime", "empty"),
    Attr("AccessionNumber", "empty"),
    Attr("StudyID", "empty"),
    Attr("ReferringPhysicianName", "empty"),
)
_SERIES = (
    Attr("SeriesInstanceUID", "uid", Series.series_uid),
    Attr("Modality", "str", Series.modality),
    Attr("SeriesNumber", "int", Series.series_number),
    Attr("SeriesDescription", "str", Series.description),
    Attr("BodyPartExamined", "str", Series.body_part),
)
_IMAGE = (
    Attr("SOPInstanceUID", "uid", Instance.sop_uid),
    Attr("SOPClassUID", "uid", Instance.sop_class_uid),
    Attr("InstanceNumber", "int", Instance.instance_number),
    Attr("Rows", "int", Instance.rows),
    Attr("Columns", "int", Instance.columns),
)
_COUNTS = {
    "PATIENT": (Attr("NumberOfPatientRelatedStudies", "count"), Attr("NumberOfPatientRelatedSeries", "count"),
                Attr("NumberOfPatientRelatedInstances", "count")),
    "STUDY": (Attr("ModalitiesInStudy", "modalities"), Attr("NumberOfStudyRelatedSeries", "count"),
              Attr("NumberOfStudyRelatedInstances", "count")),
    "SERIES": (Attr("NumberOfSeriesRelatedInstances", "count"),),
    "IMAGE": (),
}
_OWN = {"PATIENT": _PATIENT, "STUDY": _STUDY, "SERIES": _SERIES, "IMAGE": _IMAGE}
_ENTITY: dict[str, Any] = {"PATIENT": Patient, "STUDY": Study, "SERIES": Series, "IMAGE": Instance}


def attributes(level: str) -> dict[str, Attr]:
    """Every attribute a result at ``level`` carries: its own, its counts and those of the levels above."""
    index = LEVELS.index(level)
    out: dict[str, Attr] = {}
    for upper in LEVELS[: index + 1]:
        out.update((a.keyword, a) for a in _OWN[upper])
    out.update((a.keyword, a) for a in _COUNTS[level])
    return out


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _parse_date(text: str, keyword: str) -> date:
    if not _DATE.fullmatch(text):
        raise QueryError(f"{keyword}: '{text[:20]}' is not a date (YYYYMMDD) or a range (YYYYMMDD-YYYYMMDD)")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        raise QueryError(f"{keyword}: '{text}' is not a valid calendar date") from None


def _condition(attr: Attr, value: str) -> Any:
    """The SQL condition for one key; ``None`` for universal matching."""
    value = value.strip()
    if value in ("", "*"):
        return None
    col = attr.column
    if attr.kind == "empty":
        return false()  # de-identified away: nothing can match a value
    if attr.kind == "date":
        assert col is not None
        if "-" in value:
            low, _, high = value.partition("-")
            parts: list[ColumnElement[bool]] = []
            if low:
                parts.append(col >= _parse_date(low, attr.keyword))
            if high:
                parts.append(col <= _parse_date(high, attr.keyword))
            if not parts:
                raise QueryError(f"{attr.keyword}: a range needs at least one date")
            return and_(*parts)
        return col == _parse_date(value, attr.keyword)
    if attr.kind == "int":
        assert col is not None
        try:
            return col == int(value)
        except ValueError:
            raise QueryError(f"{attr.keyword}: '{value[:20]}' is not an integer") from None
    if attr.kind == "modalities":
        values = [v for v in value.split("\\") if v]
        return Study.id.in_(select(Series.study_id).where(Series.modality.in_(values)))
    if attr.kind == "count":
        raise QueryError(f"{attr.keyword} is a return key only and cannot be matched")
    assert col is not None
    if attr.kind == "uid":
        uids = [v for v in value.split("\\") if v]
        if any(not re.fullmatch(r"[0-9.]{1,64}", u) for u in uids):
            raise QueryError(f"{attr.keyword}: not a UID or list of UIDs")
        return col.in_(uids) if len(uids) > 1 else col == uids[0]
    if "*" in value or "?" in value:
        return col.like(_like(value), escape="\\")
    return col == value


_PARENT: dict[str, tuple[str, Any]] = {
    "IMAGE": ("SERIES", Series.id == Instance.series_id),
    "SERIES": ("STUDY", Study.id == Series.study_id),
    "STUDY": ("PATIENT", Patient.id == Study.patient_id),
}
_OWNER = {a.keyword: level for level, attrs in _OWN.items() for a in attrs}
_OWNER.update({"ModalitiesInStudy": "STUDY"})


def _joined(q: Select[Any], level: str, top: str) -> Select[Any]:
    """Join the entity of ``level`` to its parents up to ``top`` (inner joins on NOT NULL foreign keys)."""
    while level != top:
        parent, on = _PARENT[level]
        q = q.join(_ENTITY[parent], on)
        level = parent
    return q


def search(s: Session, level: str, filters: Mapping[str, str], limit: int | None = None,
           offset: int = 0) -> list[dict[str, Any]]:
    """Matching entities at ``level`` as ``keyword → value`` (every attribute of the level).

    The page is chosen on ids alone (only the tables the filters need, ``ORDER BY id``, limit/offset), then
    joined to its parents for the returned attributes: a deep ``offset`` walks an index, not a join.
    """
    if level not in LEVELS:
        raise QueryError(f"query level must be one of {', '.join(LEVELS)}")
    known = attributes(level)
    entity = _ENTITY[level]
    conditions = []
    top = level
    for keyword, value in filters.items():
        attr = known.get(keyword)
        if attr is None:
            raise QueryError(f"{keyword} is not a supported matching key at {level} level")
        cond = _condition(attr, value)
        if cond is not None:
            conditions.append(cond)
            owner = _OWNER.get(keyword, level)
            top = owner if LEVELS.index(owner) < LEVELS.index(top) else top
    page = _joined(select(entity.id), level, top).where(*conditions).order_by(entity.id).offset(offset)
    if limit is not None:
        page = page.limit(limit)
    ids = page.subquery("page")
    cols = [entity.id] + [a.column for a in known.values() if a.column is not None]
    q = _joined(select(*cols).select_from(ids).join(entity, entity.id == ids.c.id), level, "PATIENT")
    q = q.order_by(entity.id)
    rows = s.execute(q).all()
    out: list[dict[str, Any]] = []
    simple = [a for a in known.values() if a.column is not None]
    for row in rows:
        item: dict[str, Any] = {"_id": row[0]}
        for attr, value in zip(simple, row[1:], strict=True):
            item[attr.keyword] = value.strftime("%Y%m%d") if isinstance(value, date) else value
        for attr in known.values():
            if attr.kind == "empty":
                item[attr.keyword] = None
        out.append(item)
    _add_counts(s, level, out)
    return out


def _add_counts(s: Session, level: str, items: list[dict[str, Any]]) -> None:
    ids = [i["_id"] for i in items]
    if not ids or level == "IMAGE":
        return
    by_id = {i["_id"]: i for i in items}
    if level == "SERIES":
        counts = s.execute(select(Instance.series_id, func.count(Instance.id))
                           .where(Instance.series_id.in_(ids)).group_by(Instance.series_id))
        for sid, n in counts:
            by_id[sid]["NumberOfSeriesRelatedInstances"] = n
        for i in items:
            i.setdefault("NumberOfSeriesRelatedInstances", 0)
        return
    key = Study.id if level == "STUDY" else Study.patient_id
    rows = s.execute(
        select(key, Series.id, Series.modality, func.count(Instance.id))
        .select_from(Study).join(Series, Series.study_id == Study.id)
        .outerjoin(Instance, Instance.series_id == Series.id)
        .where(key.in_(ids)).group_by(key, Series.id, Series.modality)
    )
    series: dict[int, int] = {}
    instances: dict[int, int] = {}
    modalities: dict[int, set[str]] = {}
    for owner, _sid, modality, n in rows:
        series[owner] = series.get(owner, 0) + 1
        instances[owner] = instances.get(owner, 0) + n
        if modality:
            modalities.setdefault(owner, set()).add(modality)
    for i in items:
        oid = i["_id"]
        if level == "STUDY":
            i["ModalitiesInStudy"] = sorted(modalities.get(oid, ()))
            i["NumberOfStudyRelatedSeries"] = series.get(oid, 0)
            i["NumberOfStudyRelatedInstances"] = instances.get(oid, 0)
        else:
            i["NumberOfPatientRelatedSeries"] = series.get(oid, 0)
            i["NumberOfPatientRelatedInstances"] = instances.get(oid, 0)
    if level == "PATIENT":
        studies = dict(s.execute(select(Study.patient_id, func.count(Study.id))
                                 .where(Study.patient_id.in_(ids)).group_by(Study.patient_id)).all())
        for i in items:
            i["NumberOfPatientRelatedStudies"] = studies.get(i["_id"], 0)

"""Aggregates computed on the node from its catalogue, passed through the node's disclosure control.

Only counts (and n / sum / sum of squares for numeric summaries) ever leave the node, through the rules of
:mod:`incisive.node.disclosure` (cells below k not listed, subset rules, overlap control, rounding, noise). The
query is built with SQLAlchemy expressions only; grouping and filter values from a job are compared as data in
Python, never put into SQL text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from incisive.common.query_spec import IMAGING_FIELDS, METRICS, UNITS, UNKNOWN, parse_fields, parse_where
from incisive.node.catalogue.models import ClinicalRecord, Instance, Patient, Series, Study
from incisive.node.disclosure import Guard, check_subset, noisy, protect

Row = dict[str, Any]


def _clinical(s: Session) -> dict[str, Row]:
    out: dict[str, Row] = {}
    for pseudonym, cancer, sex, age_band, labels in s.execute(
        select(ClinicalRecord.pseudonym, ClinicalRecord.cancer_type, ClinicalRecord.sex, ClinicalRecord.age_band,
               ClinicalRecord.labels)
    ):
        out[pseudonym] = {"cancer_type": cancer, "sex": sex, "age_band": age_band, "labels": labels or {}}
    return out


def _rows(s: Session, imaging: bool) -> Iterator[Row]:
    """One row per series (imaging) or per patient (clinical fields only), with every groupable value."""
    clinical = _clinical(s)
    if imaging:
        q = (select(Patient.pseudonym, Patient.sex, Patient.age_band, Study.id, Series.id, Series.modality,
                    Series.body_part)
             .join(Study, Study.patient_id == Patient.id).join(Series, Series.study_id == Study.id))
        for pseudonym, sex, age_band, study_id, series_id, modality, body_part in s.execute(q):
            c = clinical.get(pseudonym, {})
            yield {"patients": pseudonym, "studies": study_id, "series": series_id, "modality": modality,
                   "body_part": body_part, "cancer_type": c.get("cancer_type"), "sex": c.get("sex") or sex,
                   "age_band": c.get("age_band") or age_band, "labels": c.get("labels", {})}
        return
    seen: set[str] = set()
    for pseudonym, sex, age_band in s.execute(select(Patient.pseudonym, Patient.sex, Patient.age_band)):
        seen.add(pseudonym)
        c = clinical.get(pseudonym, {})
        yield {"patients": pseudonym, "cancer_type": c.get("cancer_type"), "sex": c.get("sex") or sex,
               "age_band": c.get("age_band") or age_band, "labels": c.get("labels", {})}
    for pseudonym, c in clinical.items():
        if pseudonym not in seen:
            yield {"patients": pseudonym, **c}


def _values(row: Row, field: str) -> list[str]:
    """A row's value(s) for one field; ``label`` is multi-valued (one per label of the patient)."""
    if field == "label":
        labels = row.get("labels") or {}
        return [f"{name}={value}" for name, value in sorted(labels.items())] or [UNKNOWN]
    if field.startswith("label."):
        value = (row.get("labels") or {}).get(field[6:])
        return [UNKNOWN if value is None else str(value)]
    value = row.get(field)
    return [UNKNOWN if value is None or value == "" else str(value)]


def _keys(row: Row, by: list[str]) -> list[tuple[str, ...]]:
    keys: list[tuple[str, ...]] = [()]
    for field in by:
        keys = [(*key, value) for key in keys for value in _values(row, field)]
    return keys


def count(s: Session, by: list[str], where: dict[str, Any] | None, unit: str, k: int,
          guard: Guard | None = None) -> dict[str, Any]:
    """The count table as it may leave the node (``guard``: the node's rules for this job; by default k only).

    Raises :class:`incisive.node.disclosure.Refused` when a rule refuses the whole question."""
    by = parse_fields(by)
    filters = parse_where(where)
    if unit not in UNITS:
        raise ValueError(f"unknown unit; allowed: {', '.join(UNITS)}")
    guard = guard or Guard(k=k)
    imaging = unit != "patients" or bool(IMAGING_FIELDS & (set(by) | set(filters)))
    cells: dict[tuple[str, ...], set[Any]] = defaultdict(set)
    margins: list[dict[str, set[Any]]] = [defaultdict(set) for _ in by]
    population: set[Any] = set()
    value_units: dict[str, set[Any]] = {name: set() for name in filters}
    filtered: set[Any] = set()
    for row in _rows(s, imaging):
        unit_id = row[unit]
        population.add(unit_id)
        matches = True
        for name, value in filters.items():
            if value in _values(row, name):
                value_units[name].add(unit_id)
            else:
                matches = False
        if not matches:
            continue
        filtered.add(unit_id)
        for key in _keys(row, by):
            cells[key].add(unit_id)
            for i, value in enumerate(key):
                margins[i][value].add(unit_id)
    if filters:
        check_subset(filtered, population, value_units, guard, unit)
    exact = guard.epsilon is None
    result = protect(cells, by, margins, filtered, guard) if exact else noisy(cells, by, guard)
    rounding = guard.rounding if exact else 0
    return {"by": by, "unit": unit, "k": guard.k, "population": len(population), "rounding": rounding, **result}


def _metric_values(s: Session, metric: str) -> list[float]:
    if metric in ("slice_thickness", "pixel_spacing", "rows", "columns"):
        column = getattr(Instance, metric)
        return [float(v) for v in s.scalars(select(column).where(column.is_not(None)))]
    if metric == "instances_per_series":
        q = select(func.count(Instance.id)).group_by(Instance.series_id)
    elif metric == "series_per_study":
        q = select(func.count(Series.id)).group_by(Series.study_id)
    else:
        q = select(func.count(Study.id)).group_by(Study.patient_id)
    return [float(v) for v in s.scalars(q)]


def summary(s: Session, metric: str, k: int) -> dict[str, Any]:
    """n, sum and sum of squares of a numeric metric (the platform pools mean and SD); nothing when n < k."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric; allowed: {', '.join(METRICS)}")
    values = _metric_values(s, metric)
    n = len(values)
    if n < k:
        return {"metric": metric, "n": None, "sum": None, "sumsq": None, "k": k}
    return {"metric": metric, "n": n, "sum": sum(values), "sumsq": sum(v * v for v in values), "k": k}

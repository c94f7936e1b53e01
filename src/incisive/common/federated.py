"""What a federated aggregate may ask for, shared by the platform (validation) and the node (computation).

Grouping fields: ``modality``, ``body_part`` (per series), ``cancer_type``, ``sex``, ``age_band`` (clinical record,
else the DICOM patient), ``label`` (each ``name=value`` label of a patient) and ``label.NAME`` (one label's value).
Units: ``patients`` (distinct pseudonyms, the default), ``studies``, ``series``. Numeric summaries: see METRICS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

GROUP_FIELDS = ("modality", "body_part", "cancer_type", "sex", "age_band", "label")
IMAGING_FIELDS = frozenset({"modality", "body_part"})
LABEL_FIELD = re.compile(r"label\.[a-z0-9_]{1,32}")
UNITS = ("patients", "studies", "series")
METRICS = ("slice_thickness", "pixel_spacing", "rows", "columns", "instances_per_series", "series_per_study",
           "studies_per_patient")
JOB_TYPES = ("count", "summary", "fl-supernode", "infer")
MAX_GROUP_FIELDS = 4
MAX_FILTER_VALUE = 64


def is_field(name: str) -> bool:
    return name in GROUP_FIELDS or bool(LABEL_FIELD.fullmatch(name))


def parse_fields(fields: Sequence[str]) -> list[str]:
    """Validated grouping fields; ValueError names the allowed ones (never echoes long input)."""
    out: list[str] = []
    for raw in fields:
        name = raw.strip()
        if not is_field(name):
            shown = f" {name!r}" if re.fullmatch(r"[A-Za-z0-9_.]{1,40}", name) else ""  # never echo odd input
            raise ValueError(f"unknown grouping field{shown}; allowed: {', '.join(GROUP_FIELDS)}, label.NAME")
        if name in out:
            raise ValueError(f"grouping field {name!r} given twice")
        out.append(name)
    if not out:
        raise ValueError("give at least one grouping field")
    if len(out) > MAX_GROUP_FIELDS:
        raise ValueError(f"at most {MAX_GROUP_FIELDS} grouping fields")
    return out


def parse_where(where: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (where or {}).items():
        if not is_field(name):
            raise ValueError(f"unknown filter field; allowed: {', '.join(GROUP_FIELDS)}, label.NAME")
        if not isinstance(value, str | int) or isinstance(value, bool) or len(str(value)) > MAX_FILTER_VALUE:
            raise ValueError(f"filter values must be strings of at most {MAX_FILTER_VALUE} characters")
        out[name] = str(value)
    return out


def suppress(cells: Mapping[tuple[str, ...], int], by: Sequence[str], margins: Sequence[Mapping[str, int]],
             total: int, k: int) -> dict[str, Any]:
    """Node-side disclosure control of a count table (``margins[i]``: distinct units per value of ``by[i]``).

    * primary: a cell below ``k`` is sent as ``null`` (its existence, i.e. "1 to k-1", is all that is shown);
    * secondary: a margin (per value of one grouping field) and the total are sent only when **every cell they
      cover** is published and they are themselves ≥ k, so no total minus published cells reveals a suppressed
      cell.
    """
    published = {key: (n if n >= k else None) for key, n in cells.items()}
    out_margins: dict[str, list[dict[str, Any]]] = {}
    if len(by) > 1:
        for i, field in enumerate(by):
            rows = []
            for value, n in sorted(margins[i].items()):
                complete = all(published[key] is not None for key in cells if key[i] == value)
                rows.append({"value": value, "count": n if complete and n >= k else None})
            out_margins[field] = rows
    complete = all(v is not None for v in published.values())
    return {
        "cells": [{"key": list(key), "count": published[key]} for key in sorted(cells)],
        "margins": out_margins,
        "total": total if complete and total >= k else None,
        "k": k,
    }

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
MAX_GROUP_FIELDS = 4
MAX_FILTER_VALUE = 64
UNKNOWN = "unknown"
OTHER = "other"

# Declared value domains for noisy (ε) counts: every node lists every combination of these values, whether it
# has units there or not, so that an empty cell looks like a small one. A value outside its domain is counted
# under "other". Fields without a domain (body_part, labels) cannot be grouped on with ε.
_AGE_BANDS = (*(f"{d}-{d + 9}" for d in range(0, 90, 10)), "90+")
DOMAINS: dict[str, tuple[str, ...]] = {
    "modality": ("CT", "MR", "MG", "US", "PT", "NM", "CR", "DX", "XA", "RF", "SC", "SR", "SEG", "OT", OTHER,
                 UNKNOWN),
    "cancer_type": ("breast", "lung", "prostate", "colorectal", "melanoma", "pancreas", "kidney", "bladder",
                    "liver", "ovary", "stomach", "head_neck", "brain", "lymphoma", OTHER, UNKNOWN),
    "sex": ("F", "M", "O", UNKNOWN),
    "age_band": (*_AGE_BANDS, UNKNOWN),
}
MAX_DP_CELLS = 4096

# The rules a node or the platform refuses or withholds by (named in answers, refusals and audit entries).
RULES = {
    "participate": "the node does not take part in federated jobs",
    "job_types": "the node does not accept this job type",
    "researchers": "the node does not answer this researcher",
    "projects": "the node does not answer this project",
    "min_cell_count": "cells with fewer than k units are not shown",
    "min_subset": "a filtered set and the rest of the node must each have at least min_subset units",
    "filter_value": "each filter value must have at least k units on its own",
    "overlap": "a cell whose units differ from an answered cell's by 1 to k-1 is not shown",
    "require_dp": "only noisy (epsilon) counts are answered",
    "dp_domain": "noisy counts group only by fields with a declared value domain",
    "budget": "the privacy budget of the researcher's project is used up",
    "protocol": "the node's answer did not match the agent protocol and was dropped",
    "invalid_query": "the question is not one the platform can ask",
}


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

"""Data-quality report for the node's cohort: coverage, completeness, balance, geometry (terminal/JSON/HTML)."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from jinja2 import Environment, PackageLoader
from rich.console import Group
from rich.table import Table
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from incisive.common.output import table
from incisive.node.catalogue.models import (
    ClinicalRecord,
    ImportRun,
    Instance,
    Patient,
    QuarantineItem,
    Series,
    Study,
)

TYPED_FIELDS = ("diagnosis", "cancer_type", "sex", "age_band")


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _counts(s: Session, column: Any, missing: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for value, n in s.execute(select(column, func.count(Series.id)).group_by(column)):
        counts[value or missing] += n
    return dict(sorted(counts.items()))


def quality_report(s: Session) -> dict[str, Any]:
    imaging = set(s.scalars(select(Patient.pseudonym)))
    records = list(s.scalars(select(ClinicalRecord)))
    clinical = {r.pseudonym for r in records}
    by_modality = _counts(s, Series.modality, "?")
    by_body_part = _counts(s, Series.body_part, "unknown")
    with_pixels = func.sum(case((Instance.has_pixels.is_(True), 1), else_=0))
    no_pixel_series = [
        uid for uid, px in s.execute(
            select(Series.series_uid, with_pixels).outerjoin(Instance).group_by(Series.id, Series.series_uid)
        ) if not px
    ]
    completeness: dict[str, float] = {}
    if records:
        for name in TYPED_FIELDS:
            completeness[name] = sum(1 for r in records if getattr(r, name)) / len(records)
        extra_keys = sorted({k for r in records for k in (r.fields or {})})
        for key in extra_keys:
            completeness[key] = sum(1 for r in records if (r.fields or {}).get(key) not in (None, "")) / len(records)
    labels: dict[str, Counter[str]] = {}
    for record in records:
        for key, value in (record.labels or {}).items():
            labels.setdefault(key, Counter())[str(value)] += 1
    geometry: dict[str, Any] = {}
    rows = s.execute(select(Series.modality, Instance.rows, Instance.columns, Instance.pixel_spacing,
                            Instance.slice_thickness).join(Instance))
    per_mod: dict[str, dict[str, Any]] = {}
    for modality, n_rows, n_cols, spacing, thickness in rows:
        g = per_mod.setdefault(modality or "?", {"matrix": Counter(), "spacing": [], "thickness": []})
        if n_rows and n_cols:
            g["matrix"][f"{n_rows}x{n_cols}"] += 1
        if spacing:
            g["spacing"].append(spacing)
        if thickness:
            g["thickness"].append(thickness)
    for modality, g in sorted(per_mod.items()):
        geometry[modality] = {"matrix": dict(g["matrix"].most_common()), "pixel_spacing_mm": _spread(g["spacing"]),
                              "slice_thickness_mm": _spread(g["thickness"])}
    quarantine = dict(Counter(s.scalars(select(QuarantineItem.reason))))
    removed: Counter[str] = Counter()  # fail-closed removals beyond Table E.1-1 over every DICOM import run
    for counts in s.scalars(select(ImportRun.counts).where(ImportRun.kind == "dicom")):
        removed.update((counts or {}).get("removed_beyond_table") or {})
    report = {
        "cohort": {
            "patients_with_images": len(imaging),
            "studies": s.scalar(select(func.count(Study.id))) or 0,
            "series": sum(by_modality.values()),
            "instances": s.scalar(select(func.count(Instance.id))) or 0,
            "clinical_records": len(records),
        },
        "by_modality": by_modality,
        "by_body_part": by_body_part,
        "series_without_pixel_data": {"count": len(no_pixel_series), "series": no_pixel_series[:100]},
        "patients_without_clinical_record": len(imaging - clinical),
        "clinical_records_without_images": len(clinical - imaging),
        "clinical_completeness": completeness,
        "label_balance": {k: dict(v) for k, v in labels.items()},
        "image_geometry": geometry,
        "quarantine": quarantine,
        "removed_beyond_table": dict(sorted(removed.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
    report["warnings"] = _warnings(report)
    return report


def _warnings(r: dict[str, Any]) -> list[str]:
    out = []
    if r["patients_without_clinical_record"]:
        out.append(f"{r['patients_without_clinical_record']} patient(s) have images but no clinical record")
    if r["clinical_records_without_images"]:
        out.append(f"{r['clinical_records_without_images']} clinical record(s) have no images")
    if r["series_without_pixel_data"]["count"]:
        out.append(f"{r['series_without_pixel_data']['count']} series have no pixel data")
    for name, fraction in r["clinical_completeness"].items():
        if fraction < 0.9:
            out.append(f"clinical field '{name}' is only {fraction:.0%} complete")
    for name, counts in r["label_balance"].items():
        total = sum(counts.values())
        if len(counts) == 1 or (total and min(counts.values()) / total < 0.1):
            out.append(f"label '{name}' is imbalanced: {counts}")
    if r["quarantine"]:
        out.append(f"{sum(r['quarantine'].values())} instance(s) wait in quarantine for review")
    return out


def render_rich(r: dict[str, Any]) -> Group:
    parts: list[Table] = [
        table("Cohort", ["", "count"], r["cohort"].items()),
        table("Series by modality", ["modality", "series"], r["by_modality"].items()),
        table("Series by body part", ["body part", "series"], r["by_body_part"].items()),
        table("Clinical completeness", ["field", "complete"],
              ((k, f"{v:.0%}") for k, v in r["clinical_completeness"].items())),
        table("Label balance", ["label", "values"], ((k, ", ".join(f"{a}: {b}" for a, b in v.items()))
                                                     for k, v in r["label_balance"].items())),
        table("Image geometry", ["modality", "matrix", "pixel spacing mm (min/med/max)", "slice mm (min/med/max)"],
              ((m, ", ".join(g["matrix"]), _fmt(g["pixel_spacing_mm"]), _fmt(g["slice_thickness_mm"]))
               for m, g in r["image_geometry"].items())),
        table("Removed beyond Table E.1-1 (fail-closed de-identification)", ["attribute", "values removed"],
              r["removed_beyond_table"].items()),
        table("Findings", ["warning"], ((w,) for w in r["warnings"] or ["none"])),
    ]
    return Group(*parts)


def _fmt(spread: dict[str, float | None]) -> str:
    if spread["min"] is None:
        return "-"
    return "/".join(f"{spread[k]:.2f}" for k in ("min", "median", "max"))


def render_html(r: dict[str, Any], title: str) -> str:
    env = Environment(loader=PackageLoader("incisive.node", "templates"), autoescape=True)
    return env.get_template("quality.html.j2").render(r=r, title=title, fmt=_fmt)

"""Read-side queries over the catalogue (stats, listings). Only pseudonymised values come out."""

from __future__ import annotations

from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from incisive.node.catalogue.models import ClinicalRecord, Instance, Patient, QuarantineItem, Series, Study


def stats(s: Session) -> dict[str, Any]:
    totals = {
        "patients": s.scalar(select(func.count(Patient.id))) or 0,
        "studies": s.scalar(select(func.count(Study.id))) or 0,
        "series": s.scalar(select(func.count(Series.id))) or 0,
        "instances": s.scalar(select(func.count(Instance.id))) or 0,
        "bytes": int(s.scalar(select(func.coalesce(func.sum(Instance.size), 0))) or 0),
        "clinical_records": s.scalar(select(func.count(ClinicalRecord.id))) or 0,
        "quarantined": s.scalar(select(func.count(QuarantineItem.id))) or 0,
    }
    rows = s.execute(
        select(
            Series.modality,
            func.count(distinct(Study.patient_id)),
            func.count(distinct(Series.study_id)),
            func.count(distinct(Series.id)),
            func.count(Instance.id),
            func.coalesce(func.sum(Instance.size), 0),
        )
        .select_from(Series)
        .join(Study, Study.id == Series.study_id)
        .outerjoin(Instance, Instance.series_id == Series.id)
        .group_by(Series.modality)
        .order_by(Series.modality)
    )
    by_modality = [
        {"modality": m or "?", "patients": p, "studies": st, "series": se, "instances": i, "bytes": int(b)}
        for m, p, st, se, i, b in rows
    ]
    return {**totals, "by_modality": by_modality}


def list_studies(s: Session, modality: str | None = None, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
    q = (
        select(
            Study.study_uid, Patient.pseudonym, Study.study_date, Study.description,
            func.count(distinct(Series.id)), func.count(Instance.id),
        )
        .join(Patient, Patient.id == Study.patient_id)
        .outerjoin(Series, Series.study_id == Study.id)
        .outerjoin(Instance, Instance.series_id == Series.id)
        .group_by(Study.id, Study.study_uid, Patient.pseudonym, Study.study_date, Study.description)
        .order_by(Study.study_date, Study.study_uid)
        .limit(limit)
        .offset(offset)
    )
    if modality:
        q = q.where(Study.id.in_(select(Series.study_id).where(Series.modality == modality.upper())))
    rows = s.execute(q).all()
    modalities: dict[str, set[str]] = {}
    uids = [r[0] for r in rows]
    for start in range(0, len(uids), 500):
        pairs = s.execute(
            select(Study.study_uid, Series.modality).join(Series).where(Study.study_uid.in_(uids[start:start + 500]))
        )
        for uid, m in pairs:
            if m:
                modalities.setdefault(uid, set()).add(m)
    return [
        {"study_uid": uid, "patient": pseudonym, "study_date": study_date.isoformat() if study_date else None,
         "modalities": sorted(modalities.get(uid, ())), "description": desc, "series": n_series,
         "instances": n_inst}
        for uid, pseudonym, study_date, desc, n_series, n_inst in rows
    ]


def list_series(s: Session, modality: str | None = None, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
    q = (
        select(
            Series.series_uid, Study.study_uid, Patient.pseudonym, Series.modality, Series.body_part,
            Series.description, func.count(Instance.id), func.coalesce(func.sum(Instance.size), 0),
        )
        .join(Study, Study.id == Series.study_id)
        .join(Patient, Patient.id == Study.patient_id)
        .outerjoin(Instance, Instance.series_id == Series.id)
        .group_by(Series.id, Series.series_uid, Study.study_uid, Patient.pseudonym, Series.modality,
                  Series.body_part, Series.description)
        .order_by(Study.study_uid, Series.series_number, Series.series_uid)
        .limit(limit)
        .offset(offset)
    )
    if modality:
        q = q.where(Series.modality == modality.upper())
    return [
        {"series_uid": su, "study_uid": st, "patient": p, "modality": m, "body_part": bp, "description": d,
         "instances": n, "bytes": int(b)}
        for su, st, p, m, bp, d, n, b in s.execute(q)
    ]

"""Write de-identified instances into the catalogue (shared by folder import, fsck repair and the SCP).

The caller stores the object first (durable), then records it here, then commits: a catalogue row never
points at bytes that are not on disk.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incisive.node.catalogue.models import Instance, Patient, QuarantineItem, Series, Study


def now() -> datetime:
    return datetime.now(UTC)


def _date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None


class CatalogueWriter:
    """Get-or-create for patient/study/series with per-writer caches; one writer per transaction."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self._patients: dict[str, Patient] = {}
        self._studies: dict[str, Study] = {}
        self._series: dict[str, Series] = {}

    def existing_instances(self, sop_uids: list[str]) -> dict[str, str]:
        """sop_uid → object_hash for those already catalogued."""
        if not sop_uids:
            return {}
        rows = self.s.execute(select(Instance.sop_uid, Instance.object_hash).where(Instance.sop_uid.in_(sop_uids)))
        return {uid: digest for uid, digest in rows}

    def existing_quarantine(self, sop_uids: list[str]) -> dict[str, str]:
        if not sop_uids:
            return {}
        rows = self.s.execute(
            select(QuarantineItem.sop_uid, QuarantineItem.object_hash).where(QuarantineItem.sop_uid.in_(sop_uids))
        )
        return {uid: digest for uid, digest in rows}

    def patient(self, f: dict[str, Any]) -> Patient:
        key = f["pseudonym"]
        patient = self._patients.get(key) or self.s.scalar(select(Patient).where(Patient.pseudonym == key))
        if patient is None:
            patient = Patient(pseudonym=key, sex=f.get("sex"), age_band=f.get("age_band"))
            self.s.add(patient)
        else:
            patient.sex = patient.sex or f.get("sex")
            patient.age_band = f.get("age_band") or patient.age_band
        self._patients[key] = patient
        return patient

    def study(self, f: dict[str, Any]) -> Study:
        key = f["study_uid"]
        study = self._studies.get(key) or self.s.scalar(select(Study).where(Study.study_uid == key))
        if study is None:
            study = Study(study_uid=key, patient=self.patient(f), study_date=_date(f.get("study_date")),
                          description=f.get("study_description"))
            self.s.add(study)
        self._studies[key] = study
        return study

    def series(self, f: dict[str, Any]) -> Series:
        key = f["series_uid"]
        series = self._series.get(key) or self.s.scalar(select(Series).where(Series.series_uid == key))
        if series is None:
            series = Series(series_uid=key, study=self.study(f), modality=f.get("modality"),
                            body_part=f.get("body_part"), description=f.get("series_description"),
                            series_number=f.get("series_number"))
            self.s.add(series)
        self._series[key] = series
        return series

    def add_instance(self, f: dict[str, Any], digest: str, size: int, run_id: int | None) -> Instance:
        instance = Instance(
            sop_uid=f["sop_uid"], series=self.series(f), sop_class_uid=f["sop_class_uid"],
            transfer_syntax=f.get("transfer_syntax"), object_hash=digest, size=size,
            instance_number=f.get("instance_number"), has_pixels=bool(f.get("has_pixels")), rows=f.get("rows"),
            columns=f.get("columns"), pixel_spacing=f.get("pixel_spacing"),
            slice_thickness=f.get("slice_thickness"), import_run_id=run_id, created_at=now(),
        )
        self.s.add(instance)
        return instance

    def add_quarantine(self, f: dict[str, Any], digest: str, reason: str) -> QuarantineItem:
        item = QuarantineItem(sop_uid=f["sop_uid"], object_hash=digest, modality=f.get("modality"), reason=reason,
                              pseudonym=f.get("pseudonym"), created_at=now())
        self.s.add(item)
        return item

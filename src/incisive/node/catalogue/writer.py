"""Write de-identified instances into the catalogue (shared by folder import, fsck repair and the SCP).

The caller stores the object first (durable), then records it here, then commits: a catalogue row never
points at bytes that are not on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from incisive.node.catalogue.models import ImportIssue, Instance, Patient, QuarantineItem, Series, Study


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


class IngestWriter:
    """Core-level catalogue writes for the ingest paths, with uid → id caches kept across transactions.

    One writer per association, STOW request or folder import. A C-STORE is a transaction of its own, so the
    ORM get-or-create of patient/study/series (three SELECTs, an identity map, a flush) would otherwise be paid
    for every instance; here a series seen before costs a dictionary lookup, and an instance is one INSERT.

    Caches only ever hold ids of *committed* rows: ids created inside a transaction are promoted when it
    commits and forgotten when it rolls back. An :class:`IntegrityError` (a concurrent association created the
    same study first, or ``fsck --repair`` dropped a row we had cached) empties every cache; the caller retries.
    """

    def __init__(self) -> None:
        self._studies: dict[str, int] = {}
        self._series: dict[str, int] = {}
        self._new_studies: dict[str, int] = {}
        self._new_series: dict[str, int] = {}
        self._conn: Connection | None = None
        self._instances: list[dict[str, Any]] = []
        self._issues: list[dict[str, Any]] = []

    @contextmanager
    def transaction(self, conn: Connection) -> Iterator[IngestWriter]:
        """Use ``conn`` (already in a transaction) for the writes of one batch; the caller commits."""
        self._conn = conn
        try:
            yield self
            self.flush()
        except BaseException as exc:
            self._new_studies.clear()
            self._new_series.clear()
            if isinstance(exc, IntegrityError):
                self.forget()
            raise
        finally:
            self._conn = None
            self._instances.clear()
            self._issues.clear()

    def committed(self) -> None:
        """The caller's transaction committed: the ids it created may now be cached."""
        self._studies.update(self._new_studies)
        self._series.update(self._new_series)
        self._new_studies.clear()
        self._new_series.clear()

    def forget(self) -> None:
        self._studies.clear()
        self._series.clear()

    @property
    def conn(self) -> Connection:
        assert self._conn is not None, "IngestWriter used outside transaction()"
        return self._conn

    def flush(self) -> None:
        """Send the queued instance and issue rows (one multi-row INSERT each)."""
        if self._instances:
            self.conn.execute(insert(Instance), self._instances)
            self._instances.clear()
        if self._issues:
            self.conn.execute(insert(ImportIssue), self._issues)
            self._issues.clear()

    def existing_instances(self, sop_uids: list[str]) -> dict[str, str]:
        """sop_uid → object_hash for those already catalogued."""
        if not sop_uids:
            return {}
        rows = self.conn.execute(select(Instance.sop_uid, Instance.object_hash).where(Instance.sop_uid.in_(sop_uids)))
        return {uid: digest for uid, digest in rows}

    def existing_quarantine(self, sop_uids: list[str]) -> dict[str, str]:
        if not sop_uids:
            return {}
        rows = self.conn.execute(
            select(QuarantineItem.sop_uid, QuarantineItem.object_hash).where(QuarantineItem.sop_uid.in_(sop_uids))
        )
        return {uid: digest for uid, digest in rows}

    def _insert_id(self, stmt: Any) -> int:
        key = self.conn.execute(stmt).inserted_primary_key
        assert key is not None
        return int(key[0])

    def _patient_id(self, f: dict[str, Any]) -> int:
        """Same rules as :meth:`CatalogueWriter.patient` (consulted only when a study is created)."""
        key = f["pseudonym"]
        row = self.conn.execute(select(Patient.id, Patient.sex, Patient.age_band)
                                .where(Patient.pseudonym == key)).first()
        if row is None:
            return self._insert_id(insert(Patient).values(pseudonym=key, sex=f.get("sex"),
                                                          age_band=f.get("age_band")))
        pid, sex, band = row
        new_sex, new_band = sex or f.get("sex"), f.get("age_band") or band
        if (new_sex, new_band) != (sex, band):
            self.conn.execute(update(Patient).where(Patient.id == pid).values(sex=new_sex, age_band=new_band))
        return int(pid)

    def _study_id(self, f: dict[str, Any]) -> int:
        key = f["study_uid"]
        sid = self._studies.get(key) or self._new_studies.get(key)
        if sid is None:
            sid = self.conn.scalar(select(Study.id).where(Study.study_uid == key))
            if sid is None:
                sid = self._insert_id(insert(Study).values(
                    study_uid=key, patient_id=self._patient_id(f), study_date=_date(f.get("study_date")),
                    description=f.get("study_description")))
            self._new_studies[key] = sid
        return sid

    def series_id(self, f: dict[str, Any]) -> int:
        key = f["series_uid"]
        sid = self._series.get(key) or self._new_series.get(key)
        if sid is None:
            sid = self.conn.scalar(select(Series.id).where(Series.series_uid == key))
            if sid is None:
                sid = self._insert_id(insert(Series).values(
                    series_uid=key, study_id=self._study_id(f), modality=f.get("modality"),
                    body_part=f.get("body_part"), description=f.get("series_description"),
                    series_number=f.get("series_number")))
            self._new_series[key] = sid
        return sid

    def add_instance(self, f: dict[str, Any], digest: str, size: int, run_id: int | None) -> None:
        self._instances.append({
            "sop_uid": f["sop_uid"], "series_id": self.series_id(f), "sop_class_uid": f["sop_class_uid"],
            "transfer_syntax": f.get("transfer_syntax"), "object_hash": digest, "size": size,
            "instance_number": f.get("instance_number"), "has_pixels": bool(f.get("has_pixels")),
            "rows": f.get("rows"), "columns": f.get("columns"), "pixel_spacing": f.get("pixel_spacing"),
            "slice_thickness": f.get("slice_thickness"), "import_run_id": run_id, "created_at": now(),
        })

    def add_quarantine(self, f: dict[str, Any], digest: str, reason: str) -> None:
        self.conn.execute(insert(QuarantineItem).values(
            sop_uid=f["sop_uid"], object_hash=digest, modality=f.get("modality"), reason=reason,
            pseudonym=f.get("pseudonym"), created_at=now()))

    def add_issue(self, run_id: int, outcome: str, reason: str, file_digest: str) -> None:
        self._issues.append({"run_id": run_id, "outcome": outcome, "reason": reason, "file_digest": file_digest})

"""What a breach touches, from the catalogue: the affected studies/series resolved to catalogue UIDs, and the
categories and approximate numbers of data subjects and records (GDPR Art. 33(3)(a)) computed from them.

A UID may be given as stored (the pseudonymised ``2.25.…`` UID in the catalogue) or as the hospital's original
UID: the node maps it with its own key (:meth:`Pseudonymiser.uid`), so the operator can name what the PACS shows.
Errors count the UIDs that match nothing; they never quote one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from incisive.common.errors import InputError
from incisive.node.catalogue.models import ClinicalRecord, Instance, Patient, Series, Study
from incisive.node.home import Node

CHUNK = 500
NUMBER_KEYS = ("patients", "studies", "series", "instances", "clinical_rows")


def _chunks(items: Sequence[Any], n: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def split_uids(values: Iterable[str]) -> list[str]:
    """``--studies A,B --studies C`` → ``[A, B, C]`` (blanks dropped, order kept, duplicates removed)."""
    out: dict[str, None] = {}
    for value in values:
        for part in value.split(","):
            if part.strip():
                out[part.strip()] = None
    return list(out)


def _known(s: Session, column: Any, uids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(uids):
        found.update(s.scalars(select(column).where(column.in_(chunk))))
    return found


def _resolve(s: Session, node: Node, column: Any, uids: Sequence[str], what: str) -> list[str]:
    """Catalogue UIDs for ``uids`` (stored as given, else the node's pseudonym of the original UID)."""
    direct = _known(s, column, uids)
    mapped = {u: node.pseudonymiser.uid(u) for u in uids if u not in direct}
    found = direct | _known(s, column, sorted(set(mapped.values())))
    out = [u if u in direct else mapped[u] for u in uids]
    missing = sum(1 for u in out if u not in found)
    if missing:
        raise InputError(f"{missing} of the {len(uids)} {what} UIDs given are not in this node's catalogue "
                         "(neither as stored nor as original UIDs); nothing was recorded")
    return sorted(set(out))


def resolve_scope(node: Node, studies: Sequence[str], series: Sequence[str], all_data: bool) -> dict[str, Any]:
    """``{"all": bool, "studies": [...], "series": [...]}`` with catalogue UIDs; InputError naming no UID."""
    if all_data and (studies or series):
        raise InputError("give --all-data or --studies/--series, not both")
    if not (studies or series):
        return {"all": all_data, "studies": [], "series": []}
    with node.catalogue.session() as s:
        return {"all": False,
                "studies": _resolve(s, node, Study.study_uid, studies, "study") if studies else [],
                "series": _resolve(s, node, Series.series_uid, series, "series") if series else []}


def merge_scopes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    if old.get("all") or new.get("all"):
        return {"all": True, "studies": [], "series": []}
    return {"all": False, "studies": sorted(set(old.get("studies", [])) | set(new.get("studies", []))),
            "series": sorted(set(old.get("series", [])) | set(new.get("series", [])))}


def is_empty(scope: dict[str, Any]) -> bool:
    return not (scope.get("all") or scope.get("studies") or scope.get("series"))


def _ids(s: Session, id_col: Any, key_col: Any, keys: Sequence[Any]) -> set[int]:
    out: set[int] = set()
    for chunk in _chunks(keys):
        out.update(s.scalars(select(id_col).where(key_col.in_(chunk))))
    return out


def _count(s: Session, what: Any, key_col: Any, keys: Sequence[Any]) -> int:
    return sum(int(s.scalar(select(func.count(what)).where(key_col.in_(chunk))) or 0) for chunk in _chunks(keys))


def _distinct(s: Session, col: Any, key_col: Any, keys: Sequence[Any]) -> set[Any]:
    out: set[Any] = set()
    for chunk in _chunks(keys):
        out.update(v for v in s.scalars(select(col).where(key_col.in_(chunk)).distinct()) if v is not None)
    return out


def _clinical_names(rows: Iterable[tuple[dict[str, Any] | None, dict[str, Any] | None]]) -> tuple[set[str], set[str]]:
    labels: set[str] = set()
    fields: set[str] = set()
    for lab, fld in rows:
        labels.update((lab or {}).keys())
        fields.update((fld or {}).keys())
    return labels, fields


def _whole(s: Session) -> tuple[dict[str, int], set[str], set[str], set[str]]:
    numbers = {"patients": int(s.scalar(select(func.count(Patient.id))) or 0),
               "studies": int(s.scalar(select(func.count(Study.id))) or 0),
               "series": int(s.scalar(select(func.count(Series.id))) or 0),
               "instances": int(s.scalar(select(func.count(Instance.id))) or 0),
               "clinical_rows": int(s.scalar(select(func.count(ClinicalRecord.id))) or 0)}
    modalities = {m for m in s.scalars(select(Series.modality).distinct()) if m}
    labels, fields = _clinical_names(s.execute(select(ClinicalRecord.labels, ClinicalRecord.fields)).all())
    return numbers, modalities, labels, fields


def _part(s: Session, scope: dict[str, Any]) -> tuple[dict[str, int], set[str], set[str], set[str]]:
    study_ids = _ids(s, Study.id, Study.study_uid, scope["studies"])
    given_series = _ids(s, Series.id, Series.series_uid, scope["series"])
    study_ids |= _distinct(s, Series.study_id, Series.id, sorted(given_series))
    series_ids = given_series | _ids(s, Series.id, Series.study_id, sorted(study_ids))
    patient_ids = _distinct(s, Study.patient_id, Study.id, sorted(study_ids))
    pseudonyms = sorted(_distinct(s, Patient.pseudonym, Patient.id, sorted(patient_ids)))
    rows: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
    for chunk in _chunks(pseudonyms):
        rows += s.execute(select(ClinicalRecord.labels, ClinicalRecord.fields)
                          .where(ClinicalRecord.pseudonym.in_(chunk))).all()
    numbers = {"patients": len(patient_ids), "studies": len(study_ids), "series": len(series_ids),
               "instances": _count(s, Instance.id, Instance.series_id, sorted(series_ids)),
               "clinical_rows": len(rows)}
    labels, fields = _clinical_names(rows)
    return numbers, _distinct(s, Series.modality, Series.id, sorted(series_ids)), labels, fields


def measure(node: Node, scope: dict[str, Any]) -> dict[str, Any]:
    """``{"numbers": {patients, studies, series, instances, clinical_rows}, "categories": {"subjects": [...],
    "data": [...]}}`` for a scope (counts and names of kinds only: modalities, clinical field and label names)."""
    if is_empty(scope):
        return {"numbers": None, "categories": {"subjects": [], "data": []}}
    with node.catalogue.session() as s:
        numbers, modalities, labels, fields = _whole(s) if scope.get("all") else _part(s, scope)
    subjects = []
    if numbers["patients"]:
        subjects.append("patients (imaging studies)")
    if numbers["clinical_rows"]:
        subjects.append("patients (clinical records)")
    data = []
    if numbers["instances"] or numbers["series"]:
        kinds = ", ".join(sorted(modalities)) or "modality not recorded"
        data.append(f"medical images, pseudonymised DICOM ({kinds})")
    if numbers["clinical_rows"]:
        data.append("clinical records: diagnosis, cancer type, age band, sex (health data, Art. 9)")
        if labels:
            data.append("clinical labels: " + ", ".join(sorted(labels)))
        if fields:
            data.append("clinical fields: " + ", ".join(sorted(fields)))
    return {"numbers": numbers, "categories": {"subjects": subjects, "data": data}}

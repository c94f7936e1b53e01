"""Clinical CSV import: pseudonymise the patient id with the node's HMAC, refuse direct identifiers.

* the id column (default ``patient_id``) becomes the same pseudonym DICOM import gives that patient;
* columns that look like direct identifiers (name, address, phone, e-mail, national ids, birth date,
  free-text notes) are refused with a clear message unless listed in ``drop``;
* typed fields: ``diagnosis``, ``cancer_type``, ``sex``, ``age`` (stored as a 10-year band) or ``age_band``;
  label columns (``lesion``, ``label``, ``label_*`` or those named) go to ``labels``;
* ``*_date`` columns are shifted by the patient's keyed day offset, like DICOM dates; everything else is
  kept in ``fields``. Re-importing updates records in place.

The per-row pseudonymisation (:func:`pseudonymise_row`) is shared with the provider's uploader
(:mod:`incisive.node.upload`), which sends rows already pseudonymised with its own key to a Central Node tenant;
:func:`store_pseudonymised_rows` stores those there (a tenant has no pseudonym key of its provider).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from incisive.common.crypto import Pseudonymiser
from incisive.common.errors import InputError
from incisive.common.logging import get_logger
from incisive.node.catalogue.models import ClinicalRecord, ImportIssue, ImportRun
from incisive.node.catalogue.writer import now
from incisive.node.erasure import ErasedFilter
from incisive.node.home import Node
from incisive.node.ingest.dicom_file import age_band

log = get_logger("ingest.clinical")
MAX_CSV_BYTES = 512 * 1024**2
IDENTIFIER_COLUMN = re.compile(
    r"(^|_)(name|names|surname|firstname|lastname|forename|initials|address|street|city|zip|zipcode|postcode|"
    r"postal|phone|telephone|tel|mobile|fax|email|mail|ssn|social|nhs|insurance|passport|iban|dob|birth|"
    r"birthdate|dateofbirth|mrn|note|notes|comment|comments|freetext)(_|$)"
)
TYPED = ("diagnosis", "cancer_type", "sex", "age", "age_band")
SEX = {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O", "u": None, "unknown": None}
PSEUDONYM = re.compile(r"P[A-Z2-7]{16}")  # incisive.common.crypto.Pseudonymiser.patient
ID_KEY = "patient_id"  # the key of an uploaded row that holds the patient's pseudonym
MAX_UPLOAD_ROWS = 10_000
MAX_UPLOAD_VALUE = 1024


@dataclass
class ClinicalReport:
    run_id: int
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "records": self.counts.get("records", 0),
                "updated": self.counts.get("updated", 0), "rejected": self.counts.get("rejected", 0),
                "dropped_columns": self.counts.get("dropped_columns", 0), "problems": self.problems}


def _norm(column: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", column.strip().lower()).strip("_")


def read_csv(path: Path, encoding: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read clinical CSV: {exc.strerror or 'I/O error'}") from None
    if len(raw) > MAX_CSV_BYTES:
        raise InputError(f"clinical CSV is larger than {MAX_CSV_BYTES} bytes")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"clinical CSV is not valid {encoding} (first bad byte at offset {exc.start}); "
            "save it as UTF-8 or pass --encoding (e.g. latin-1)"
        ) from None
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel()  # type: ignore[assignment]
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    if not reader.fieldnames:
        raise InputError("clinical CSV has no header row")
    return [str(c) for c in reader.fieldnames], list(reader)


def check_columns(columns: list[str], id_column: str, drop: Iterable[str]) -> None:
    normalised = {_norm(c): c for c in columns}
    if _norm(id_column) not in normalised:
        raise InputError(f"clinical CSV has no id column {id_column!r}; columns are: {', '.join(columns)}; "
                         "pass --id-column NAME")
    dropped = {_norm(d) for d in drop}
    refused = [c for n, c in normalised.items()
               if n != _norm(id_column) and n not in dropped and IDENTIFIER_COLUMN.search(n)]
    if refused:
        raise InputError(
            f"clinical CSV has column(s) that look like direct identifiers: {', '.join(refused)}; "
            f"they are never imported — map them to drop with --drop {','.join(refused)}"
        )


def _shift(value: str, days: int) -> str | None:
    text = value.strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d", "%d/%m/%Y", "%d.%m.%Y"):
        try:
            return (datetime.strptime(text, fmt).date() + timedelta(days=days)).isoformat()
        except ValueError:
            continue
    return None


def _value(text: str) -> Any:
    t = text.strip()
    if t == "":
        return None
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return t


def row_values(row: Mapping[Any, str | None], dropped: set[str]) -> dict[str, str]:
    """A CSV row as normalised column → text, without the dropped columns."""
    return {_norm(k): (v or "") for k, v in row.items() if k is not None and _norm(k) not in dropped}


def pseudonymise_row(p: Pseudonymiser, patient_id: str, values: dict[str, str],
                     labels_wanted: set[str]) -> tuple[str, dict[str, str]]:
    """The patient's pseudonym and the row's values with every date column (``*_date``, ``date``; not labels)
    shifted by the patient's keyed offset (ISO, empty when unparsable) and ``age`` as its 10-year ``age_band``.
    What both a node's import and the provider's uploader do to a row (the values exclude the id column)."""
    pseudonym = p.patient(patient_id)
    days = p.day_offset(pseudonym)
    out: dict[str, str] = {}
    for column, text in values.items():
        if column == "age":
            if text.strip():
                out["age_band"] = age_band(text.strip()) or ""
            continue
        if column in TYPED or _is_label(column, labels_wanted) or not (column.endswith("_date") or column == "date"):
            out.setdefault(column, text)
        else:
            out[column] = (_shift(text, days) or "") if text.strip() else ""
    return pseudonym, out


def pseudonymise_csv(p: Pseudonymiser, path: Path, id_column: str = "patient_id", drop: Iterable[str] = (),
                     encoding: str = "utf-8-sig") -> tuple[list[dict[str, str]], int]:
    """A clinical CSV's rows pseudonymised as :func:`import_clinical` does (identifier columns refused unless
    dropped), each ``{"patient_id": pseudonym, column: text}``, and how many rows had no patient id (left out).
    The provider's uploader sends these to :func:`store_pseudonymised_rows` at a Central Node tenant."""
    drop = list(drop)
    columns, rows = read_csv(path, encoding)
    check_columns(columns, id_column, drop)
    dropped = {_norm(d) for d in drop}
    out: list[dict[str, str]] = []
    empty = 0
    for row in rows:
        values = row_values(row, dropped)
        pid = values.pop(_norm(id_column), "").strip()
        if not pid:
            empty += 1
            continue
        if ID_KEY in values:
            raise InputError(f"clinical CSV has a column {ID_KEY!r} besides the id column; drop or rename it")
        pseudonym, shifted = pseudonymise_row(p, pid, values, set())
        out.append({ID_KEY: pseudonym, **shifted})
    return out, empty


def import_clinical(node: Node, path: Path, id_column: str = "patient_id", drop: Iterable[str] = (),
                    encoding: str = "utf-8-sig", label_columns: Iterable[str] = ()) -> ClinicalReport:
    drop = list(drop)
    columns, rows = read_csv(path, encoding)
    check_columns(columns, id_column, drop)
    dropped = {_norm(d) for d in drop}
    labels_wanted = {_norm(c) for c in label_columns}
    p = node.pseudonymiser
    erased = ErasedFilter(node)
    with node.catalogue.session() as s:
        run = ImportRun(kind="clinical", source_digest=p.digest("import-source", str(path.resolve())),
                        started_at=now(), counts={})
        s.add(run)
        s.flush()
        report = ClinicalReport(run.id)
        report.counts["dropped_columns"] = sum(1 for c in columns if _norm(c) in dropped)
        existing = {r.pseudonym: r for r in s.scalars(select(ClinicalRecord))}
        for number, row in enumerate(rows, start=2):
            values = row_values(row, dropped)
            pid = values.pop(_norm(id_column), "").strip()
            if not pid:
                report.counts["rejected"] += 1
                report.problems.append({"row": str(number), "reason": "empty patient id"})
                s.add(ImportIssue(run_id=run.id, outcome="rejected", reason=f"row {number}: empty patient id",
                                  file_digest=p.digest("import-row", str(number))))
                continue
            pseudonym, values = pseudonymise_row(p, pid, values, labels_wanted)
            if erased(pseudonym):  # an erased data subject (node/erasure.py): never stored again
                report.counts["erased"] += 1
                continue
            record = existing.get(pseudonym)
            if record is None:
                record = ClinicalRecord(pseudonym=pseudonym, labels={}, fields={}, import_run_id=run.id)
                s.add(record)
                existing[pseudonym] = record
                report.counts["records"] += 1
            else:
                report.counts["updated"] += 1
            _fill(record, values, labels_wanted)
        run.finished_at = now()
        run.counts = {k: int(v) for k, v in report.counts.items()}
    log.info("clinical import run %s finished: %s", report.run_id, dict(report.counts))
    return report


def _is_label(column: str, wanted: set[str]) -> bool:
    return column in wanted or column in ("label", "lesion") or column.startswith("label_")


def _fill(record: ClinicalRecord, values: dict[str, str], labels_wanted: set[str]) -> None:
    """Set a record from a pseudonymised row (:func:`pseudonymise_row`: dates already shifted, written as ISO)."""
    record.diagnosis = (values.get("diagnosis") or "").strip()[:128] or None
    record.cancer_type = (values.get("cancer_type") or "").strip().lower()[:64] or None
    record.sex = SEX.get((values.get("sex") or "").strip().lower())
    band = values.get("age_band", "").strip() or None
    record.age_band = age_band(values["age"].strip()) if values.get("age", "").strip() else band
    labels: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for column, text in values.items():
        if column in TYPED:
            continue
        if _is_label(column, labels_wanted):
            labels[column] = _value(text)
        elif column.endswith("_date") or column == "date":
            extra[column] = _shift(text, 0) if text.strip() else None
        else:
            extra[column] = _value(text)
    record.labels = labels
    record.fields = extra


def _upload_values(number: int, row: Any) -> tuple[str, dict[str, str]]:
    """Check one uploaded row; its pseudonym and normalised values. Messages name rows and columns, never values."""
    if not isinstance(row, dict):
        raise InputError(f"row {number}: must be an object of column: value")
    values: dict[str, str] = {}
    for key, value in row.items():
        column = _norm(str(key))
        if value is None:
            text = ""
        elif isinstance(value, str):
            text = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            text = str(value)
        else:
            raise InputError(f"row {number}: column {column[:64]!r} must be text, a number or null")
        if not column or len(text) > MAX_UPLOAD_VALUE:
            raise InputError(f"row {number}: a column name is empty or a value longer than {MAX_UPLOAD_VALUE}")
        values[column] = text
    pseudonym = values.pop(ID_KEY, "").strip()
    if not PSEUDONYM.fullmatch(pseudonym):
        raise InputError(f"row {number}: {ID_KEY} must be a patient pseudonym (P + 16 base32 characters)")
    refused = sorted(c for c in values if IDENTIFIER_COLUMN.search(c))
    if refused:
        raise InputError(f"row {number}: column(s) that look like direct identifiers: {', '.join(refused)}")
    return pseudonym, values


def _content(record: ClinicalRecord) -> tuple[Any, ...]:
    return (record.diagnosis, record.cancer_type, record.sex, record.age_band, record.labels, record.fields)


def store_pseudonymised_rows(node: Node, rows: Any) -> dict[str, int]:
    """Store clinical rows its provider already pseudonymised (``incisive upload``: :func:`pseudonymise_row` with
    the provider's key, ``patient_id`` holding the pseudonym) into ``node``'s catalogue, all or nothing.

    Idempotent: a row that changes nothing is a duplicate, one that creates or changes a record is stored (the
    last row of a patient wins, as in :func:`import_clinical`). :class:`InputError` for a malformed row or a
    column that looks like a direct identifier (nothing stored). Returns ``{"stored": n, "duplicates": n}``."""
    if not isinstance(rows, list):
        raise InputError("rows must be a list")
    if len(rows) > MAX_UPLOAD_ROWS:
        raise InputError(f"at most {MAX_UPLOAD_ROWS} rows per request")
    checked = [_upload_values(number, row) for number, row in enumerate(rows, start=1)]
    counts = {"stored": 0, "duplicates": 0}
    erased = ErasedFilter(node)
    if erased.entries:  # an erased data subject (node/erasure.py) uploaded again: counted, never stored
        kept = [(pseudonym, values) for pseudonym, values in checked if not erased(pseudonym)]
        if len(kept) < len(checked):
            counts["erased"] = len(checked) - len(kept)
        checked = kept
    with node.catalogue.session() as s:
        run = ImportRun(kind="clinical", source_digest=node.pseudonymiser.digest("import-source", "upload"),
                        started_at=now(), counts={})
        s.add(run)
        s.flush()
        wanted = sorted({pseudonym for pseudonym, _ in checked})
        existing = {r.pseudonym: r for r in s.scalars(select(ClinicalRecord)
                                                      .where(ClinicalRecord.pseudonym.in_(wanted)))}
        for pseudonym, values in checked:
            candidate = ClinicalRecord(pseudonym=pseudonym, labels={}, fields={}, import_run_id=run.id)
            _fill(candidate, values, set())
            record = existing.get(pseudonym)
            if record is None:
                s.add(candidate)
                existing[pseudonym] = candidate
            elif _content(record) == _content(candidate):
                counts["duplicates"] += 1
                continue
            else:
                _fill(record, values, set())
            counts["stored"] += 1
        run.finished_at = now()
        run.counts = dict(counts)
    log.info("clinical upload run %s: %s", run.id, counts)
    return counts

"""Clinical CSV import: pseudonymise the patient id with the node's HMAC, refuse direct identifiers.

* the id column (default ``patient_id``) becomes the same pseudonym DICOM import gives that patient;
* columns that look like direct identifiers (name, address, phone, e-mail, national ids, birth date,
  free-text notes) are refused with a clear message unless listed in ``drop``;
* typed fields: ``diagnosis``, ``cancer_type``, ``sex``, ``age`` (stored as a 10-year band) or ``age_band``;
  label columns (``lesion``, ``label``, ``label_*`` or those named) go to ``labels``;
* ``*_date`` columns are shifted by the patient's keyed day offset, like DICOM dates; everything else is
  kept in ``fields``. Re-importing updates records in place.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from incisive.common.errors import InputError
from incisive.common.logging import get_logger
from incisive.node.catalogue.models import ClinicalRecord, ImportIssue, ImportRun
from incisive.node.catalogue.writer import now
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


def import_clinical(node: Node, path: Path, id_column: str = "patient_id", drop: Iterable[str] = (),
                    encoding: str = "utf-8-sig", label_columns: Iterable[str] = ()) -> ClinicalReport:
    drop = list(drop)
    columns, rows = read_csv(path, encoding)
    check_columns(columns, id_column, drop)
    dropped = {_norm(d) for d in drop}
    labels_wanted = {_norm(c) for c in label_columns}
    p = node.pseudonymiser
    with node.catalogue.session() as s:
        run = ImportRun(kind="clinical", source_digest=p.digest("import-source", str(path.resolve())),
                        started_at=now(), counts={})
        s.add(run)
        s.flush()
        report = ClinicalReport(run.id)
        report.counts["dropped_columns"] = sum(1 for c in columns if _norm(c) in dropped)
        existing = {r.pseudonym: r for r in s.scalars(select(ClinicalRecord))}
        for number, row in enumerate(rows, start=2):
            values = {_norm(k): (v or "") for k, v in row.items() if k is not None and _norm(k) not in dropped}
            pid = values.pop(_norm(id_column), "").strip()
            if not pid:
                report.counts["rejected"] += 1
                report.problems.append({"row": str(number), "reason": "empty patient id"})
                s.add(ImportIssue(run_id=run.id, outcome="rejected", reason=f"row {number}: empty patient id",
                                  file_digest=p.digest("import-row", str(number))))
                continue
            pseudonym = p.patient(pid)
            record = existing.get(pseudonym)
            if record is None:
                record = ClinicalRecord(pseudonym=pseudonym, labels={}, fields={}, import_run_id=run.id)
                s.add(record)
                existing[pseudonym] = record
                report.counts["records"] += 1
            else:
                report.counts["updated"] += 1
            _fill(record, values, labels_wanted, p.day_offset(pseudonym))
        run.finished_at = now()
        run.counts = {k: int(v) for k, v in report.counts.items()}
    log.info("clinical import run %s finished: %s", report.run_id, dict(report.counts))
    return report


def _is_label(column: str, wanted: set[str]) -> bool:
    return column in wanted or column in ("label", "lesion") or column.startswith("label_")


def _fill(record: ClinicalRecord, values: dict[str, str], labels_wanted: set[str], days: int) -> None:
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
            extra[column] = _shift(text, days) if text.strip() else None
        else:
            extra[column] = _value(text)
    record.labels = labels
    record.fields = extra

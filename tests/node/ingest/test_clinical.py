from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from incisive.common.errors import InputError
from incisive.node.catalogue.models import ClinicalRecord, Patient, Study
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom


def _csv(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "clinical.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_pseudonyms_match_dicom_import(node: Node, cohort: Path) -> None:
    import_dicom(node, cohort / "dicom", workers=1)
    report = import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
    assert report.counts["records"] > 0 and report.counts["dropped_columns"] == 1
    with node.catalogue.session() as s:
        imaging = set(s.scalars(select(Patient.pseudonym)))
        records = list(s.scalars(select(ClinicalRecord)))
    linked = {r.pseudonym for r in records} & imaging
    assert len(linked) >= len(imaging) - 2  # a few synthetic patients have no clinical row
    record = records[0]
    assert record.cancer_type in {"breast", "lung", "prostate", "colorectal"}
    assert (record.age_band and "-" in record.age_band) or record.age_band == "90+"
    assert set(record.labels) == {"lesion"}
    assert "patient_name" not in record.fields and "patient_id" not in record.fields
    # every date is shifted by the patient's keyed offset (1826-3651 days back), the same offset as the patient's
    # DICOM dates: the synthetic diagnosis is 20 days before the study, and stays 20 days before the shifted study
    original = {node.pseudonymiser.patient(row["patient_id"]): date.fromisoformat(row["diagnosis_date"])
                for row in csv.DictReader((cohort / "clinical.csv").open(encoding="utf-8"))}
    with node.catalogue.session() as s:
        study_dates = {pseudonym: day for pseudonym, day in s.execute(
            select(Patient.pseudonym, Study.study_date).join(Study, Study.patient_id == Patient.id))}
    assert len(original) == len(records)
    for r in records:
        shifted = date.fromisoformat(r.fields["diagnosis_date"])
        assert 1826 <= (original[r.pseudonym] - shifted).days <= 3651, "a clinical date was not shifted"
        if r.pseudonym in study_dates:
            assert study_dates[r.pseudonym] - shifted == timedelta(days=20), "clinical and DICOM offsets differ"
    assert len(linked & study_dates.keys()) >= 5
    again = import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
    assert again.counts["records"] == 0 and again.counts["updated"] == report.counts["records"]


def test_identifier_columns_refused_unless_dropped(node: Node, tmp_path: Path) -> None:
    path = _csv(tmp_path, "patient_id,Patient Name,home_address,phone,diagnosis\nX1,Ann Lee,1 Main St,555,lung\n")
    with pytest.raises(InputError) as err:
        import_clinical(node, path)
    message = str(err.value)
    assert "Patient Name" in message and "home_address" in message and "phone" in message and "--drop" in message
    assert "Ann Lee" not in message and "1 Main St" not in message
    with node.catalogue.session() as s:
        assert s.scalar(select(ClinicalRecord)) is None
    report = import_clinical(node, path, drop=["patient name", "home_address", "phone"])
    assert report.counts["records"] == 1


def test_missing_id_column_and_bad_encoding(node: Node, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no id column 'patient_id'"):
        import_clinical(node, _csv(tmp_path, "mrn_x,diagnosis\n1,lung\n"))
    with pytest.raises(InputError, match=r"not valid utf-8-sig \(first bad byte at offset \d+\).*--encoding"):
        import_clinical(node, _csv(tmp_path, "patient_id,diagnosis\nX1,carcinome épidermoïde\n", "latin-1"))
    report = import_clinical(node, _csv(tmp_path, "patient_id,diagnosis\nX1,carcinome épidermoïde\n", "latin-1"),
                             encoding="latin-1")
    assert report.counts["records"] == 1
    with pytest.raises(InputError, match="unknown encoding"):
        import_clinical(node, _csv(tmp_path, "patient_id\nX\n"), encoding="klingon")


def test_rows_without_id_are_rejected_and_types_parsed(node: Node, tmp_path: Path) -> None:
    path = _csv(tmp_path, "patient_id;age;sex;label_response;stage;biopsy_date\n"
                          "A1;93;female;1;IIa;2020-02-01\n;40;M;0;I;2020-01-01\nA2;;x;;;not a date\n")
    report = import_clinical(node, path)
    assert report.counts["records"] == 2 and report.counts["rejected"] == 1
    assert report.problems == [{"row": "3", "reason": "empty patient id"}]
    with node.catalogue.session() as s:
        rows = {r.pseudonym: r for r in s.scalars(select(ClinicalRecord))}
    a1 = rows[node.pseudonymiser.patient("A1")]
    assert (a1.age_band, a1.sex, a1.labels, a1.fields["stage"]) == ("90+", "F", {"label_response": 1}, "IIa")
    assert a1.fields["biopsy_date"] != "2020-02-01" and len(a1.fields["biopsy_date"]) == 10
    a2 = rows[node.pseudonymiser.patient("A2")]
    assert a2.sex is None and a2.age_band is None and a2.fields["biopsy_date"] is None

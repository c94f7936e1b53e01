"""Aggregates computed on the node (SQLite and PostgreSQL catalogues) and the node's disclosure control."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import distinct, func, select

from incisive.common.federated import parse_fields, suppress
from incisive.node import federated
from incisive.node.catalogue.models import ClinicalRecord, Patient, Series, Study
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom


@pytest.fixture
def filled(node: Node, cohort: Path) -> Node:
    import_dicom(node, cohort / "dicom", workers=1)
    import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
    return node


def test_counts_match_the_catalogue(filled: Node) -> None:
    with filled.catalogue.session() as s:
        result = federated.count(s, ["modality"], None, "patients", 1)
        truth = dict(s.execute(select(Series.modality, func.count(distinct(Study.patient_id)))
                               .join(Study, Study.id == Series.study_id).group_by(Series.modality)).all())
        cells = {c["key"][0]: c["count"] for c in result["cells"]}
        assert cells == {m or "unknown": n for m, n in truth.items()}
        everyone = {p for (p,) in s.execute(select(Patient.pseudonym))} | {
            p for (p,) in s.execute(select(ClinicalRecord.pseudonym))}
        by_cancer = federated.count(s, ["cancer_type"], None, "patients", 1)
        assert sum(c["count"] for c in by_cancer["cells"]) == len(everyone) == by_cancer["total"]
        series = federated.count(s, ["modality"], None, "series", 1)
        assert sum(c["count"] for c in series["cells"]) == s.scalar(select(func.count(Series.id)))


def test_filters_labels_and_suppression(filled: Node) -> None:
    with filled.catalogue.session() as s:
        lesion = federated.count(s, ["label.lesion"], None, "patients", 1)
        assert {c["key"][0] for c in lesion["cells"]} <= {"0", "1", "unknown"}
        labels = federated.count(s, ["label"], None, "patients", 1)
        assert any(c["key"][0].startswith("lesion=") for c in labels["cells"])
        mr = federated.count(s, ["sex"], {"modality": "MR"}, "patients", 1)
        everything = federated.count(s, ["sex"], None, "patients", 1)
        assert sum(c["count"] for c in mr["cells"]) <= sum(c["count"] for c in everything["cells"])
        strict = federated.count(s, ["modality", "sex"], None, "patients", 1000)
        assert all(c["count"] is None for c in strict["cells"]) and strict["total"] is None
        assert all(m["count"] is None for rows in strict["margins"].values() for m in rows)
        with pytest.raises(ValueError):
            federated.count(s, ["patient_name"], None, "patients", 5)
        with pytest.raises(ValueError):
            federated.count(s, ["sex"], {"sex; DROP TABLE patient": "F"}, "patients", 5)
        with pytest.raises(ValueError):
            federated.count(s, ["sex"], None, "bytes", 5)


def test_summaries(filled: Node) -> None:
    with filled.catalogue.session() as s:
        rows = federated.summary(s, "rows", 1)
        assert rows["n"] > 0 and rows["sum"] / rows["n"] > 0
        assert federated.summary(s, "studies_per_patient", 10**6)["n"] is None
        with pytest.raises(ValueError):
            federated.summary(s, "age", 1)


def test_secondary_suppression_rule() -> None:
    out = suppress({("CT", "F"): 6, ("CT", "M"): 1, ("MR", "F"): 7}, ["modality", "sex"],
                   [{"CT": 7, "MR": 7}, {"F": 13, "M": 1}], 14, 5)
    assert out["total"] is None  # 14 - 6 - 7 would give the hidden 1
    assert {m["value"]: m["count"] for m in out["margins"]["modality"]} == {"CT": None, "MR": 7}
    assert {m["value"]: m["count"] for m in out["margins"]["sex"]} == {"F": 13, "M": None}
    single = suppress({("CT",): 9, ("MR",): 2}, ["modality"], [{"CT": 9, "MR": 2}], 11, 5)
    assert single["total"] is None and single["margins"] == {}
    assert parse_fields([" sex ", "label.lesion"]) == ["sex", "label.lesion"]

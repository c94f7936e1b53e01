"""Aggregates computed on the node (SQLite and PostgreSQL catalogues) and the node's disclosure control: cells
below k not listed, secondary suppression, subset rules, overlap control, rounding, noise over the declared
domain."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import distinct, func, select

from incisive.common.query_spec import DOMAINS, parse_fields
from incisive.node import aggregates
from incisive.node.catalogue.models import ClinicalRecord, Patient, Series, Study
from incisive.node.disclosure import Guard, Refused, laplace, protect
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom
from incisive.node.overlap import OverlapLog
from tests.platform.federation import PATIENTS, fill_attack_cohort


@pytest.fixture
def filled(node: Node, cohort: Path) -> Node:
    import_dicom(node, cohort / "dicom", workers=1)
    import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
    return node


def test_counts_match_the_catalogue(filled: Node) -> None:
    with filled.catalogue.session() as s:
        result = aggregates.count(s, ["modality"], None, "patients", 1)
        truth = dict(s.execute(select(Series.modality, func.count(distinct(Study.patient_id)))
                               .join(Study, Study.id == Series.study_id).group_by(Series.modality)).all())
        cells = {c["key"][0]: c["count"] for c in result["cells"]}
        assert cells == {m or "unknown": n for m, n in truth.items()}
        everyone = {p for (p,) in s.execute(select(Patient.pseudonym))} | {
            p for (p,) in s.execute(select(ClinicalRecord.pseudonym))}
        by_cancer = aggregates.count(s, ["cancer_type"], None, "patients", 1)
        assert sum(c["count"] for c in by_cancer["cells"]) == len(everyone) == by_cancer["total"]
        series = aggregates.count(s, ["modality"], None, "series", 1)
        assert sum(c["count"] for c in series["cells"]) == s.scalar(select(func.count(Series.id)))


def test_filters_labels_and_suppression(filled: Node) -> None:
    with filled.catalogue.session() as s:
        lesion = aggregates.count(s, ["label.lesion"], None, "patients", 1)
        assert {c["key"][0] for c in lesion["cells"]} <= {"0", "1", "unknown"}
        labels = aggregates.count(s, ["label"], None, "patients", 1)
        assert any(c["key"][0].startswith("lesion=") for c in labels["cells"])
        mr = aggregates.count(s, ["sex"], {"modality": "MR"}, "patients", 1)
        everything = aggregates.count(s, ["sex"], None, "patients", 1)
        assert sum(c["count"] for c in mr["cells"]) <= sum(c["count"] for c in everything["cells"])
        strict = aggregates.count(s, ["modality", "sex"], None, "patients", 1000)
        assert strict["cells"] == [] and strict["total"] is None and strict["suppressed"] is None
        assert strict["margins"] == {"modality": [], "sex": []} and strict["withheld_by"] == ["min_cell_count"]
        with pytest.raises(ValueError):
            aggregates.count(s, ["patient_name"], None, "patients", 5)
        with pytest.raises(ValueError):
            aggregates.count(s, ["sex"], {"sex; DROP TABLE patient": "F"}, "patients", 5)
        with pytest.raises(ValueError):
            aggregates.count(s, ["sex"], None, "bytes", 5)


def test_summaries(filled: Node) -> None:
    with filled.catalogue.session() as s:
        rows = aggregates.summary(s, "rows", 1)
        assert rows["n"] > 0 and rows["sum"] / rows["n"] > 0
        assert aggregates.summary(s, "studies_per_patient", 10**6)["n"] is None
        with pytest.raises(ValueError):
            aggregates.summary(s, "age", 1)


def sets(counts: dict[tuple[str, ...], int]) -> dict[tuple[str, ...], set[str]]:
    """Disjoint unit sets of the given sizes (a single-valued table)."""
    out, n = {}, 0
    for key, size in counts.items():
        out[key] = {f"u{n + i}" for i in range(size)}
        n += size
    return out


def test_secondary_suppression_over_the_shown_cells() -> None:
    cells = sets({("CT", "F"): 6, ("CT", "M"): 1, ("MR", "F"): 7})
    margins = [{"CT": cells[("CT", "F")] | cells[("CT", "M")], "MR": cells[("MR", "F")]},
               {"F": cells[("CT", "F")] | cells[("MR", "F")], "M": cells[("CT", "M")]}]
    total = set().union(*cells.values())
    out = protect(cells, ["modality", "sex"], margins, total, Guard(k=5))
    assert out["cells"] == [{"key": ["CT", "F"], "count": 6}, {"key": ["MR", "F"], "count": 7}]  # (CT, M) not listed
    assert out["total"] is None and out["suppressed"] is None  # 14 - 6 - 7 would give the hidden 1
    assert out["margins"] == {"modality": [{"value": "MR", "count": 7}], "sex": [{"value": "F", "count": 13}]}
    bigger = sets({("CT",): 9, ("MR",): 2, ("US",): 3})
    single = protect(bigger, ["modality"], [{}], set().union(*bigger.values()), Guard(k=5))
    assert single["cells"] == [{"key": ["CT"], "count": 9}]
    assert single["suppressed"] == 5 and single["total"] == 14  # the hidden part is >= k: both may be shown
    assert parse_fields([" sex ", "label.lesion"]) == ["sex", "label.lesion"]


@pytest.fixture
def attack(node: Node) -> Node:
    fill_attack_cohort(node)
    return node


def test_subset_rules(attack: Node) -> None:
    guard = Guard(k=5, min_subset=10)
    with attack.catalogue.session() as s:
        women = aggregates.count(s, ["cancer_type"], {"sex": "F"}, "patients", 5, guard)  # 20 and 18
        assert women["total"] == 20 and women["population"] == PATIENTS
        with pytest.raises(Refused) as refused:  # the one man with an unknown cancer type
            aggregates.count(s, ["age_band"], {"sex": "M", "cancer_type": "unknown"}, "patients", 5, guard)
        assert refused.value.rule == "min_subset" and "at least 10" in str(refused.value)
        with pytest.raises(Refused) as refused:  # 20 women are enough, but the rest (18 men) is not
            aggregates.count(s, ["cancer_type"], {"sex": "F"}, "patients", 5, Guard(k=5, min_subset=19))
        assert refused.value.rule == "min_subset"
        with pytest.raises(Refused) as refused:  # colorectal has 2 patients: a filter value below k
            aggregates.count(s, ["sex"], {"cancer_type": "colorectal"}, "patients", 5, Guard(k=5, min_subset=1))
        assert refused.value.rule == "filter_value" and "'cancer_type'" in str(refused.value)


def test_overlap_control_across_queries_and_researchers(attack: Node) -> None:
    log = OverlapLog(attack.home)
    try:
        def ask(requester: str, project: str | None, where: dict[str, str] | None) -> dict[str, int]:
            guard = Guard(k=5, min_subset=10, overlap=log.session(requester, project, "patients", 5), key=log.key)
            with attack.catalogue.session() as s:
                out = aggregates.count(s, ["cancer_type"], where, "patients", 5, guard)
            return {c["key"][0]: c["count"] for c in out["cells"]}

        assert ask("rita", "p1", None)["unknown"] == 6
        assert ask("rita", "p1", None)["unknown"] == 6  # the same question again: the same sets, answered
        women = ask("rita", None, {"sex": "F"})
        assert "unknown" not in women and women["breast"] == 10  # the same researcher, any project
        assert "unknown" not in ask("bob", "p1", {"sex": "F"})  # another researcher of the same project
        assert ask("eve", "p2", {"sex": "F"})["unknown"] == 5  # neither: her own first answer
        assert log.entries("rita") > 0
        raw = (attack.home / "agent" / "overlap.db").read_bytes()
        assert b"A000" not in raw and b"P000" not in raw  # hashed units only, never pseudonyms
        assert (attack.home / "secrets" / "overlap.key").stat().st_mode & 0o777 == 0o600
    finally:
        log.close()


def test_rounding_is_unbiased_and_stable() -> None:
    guard = Guard(k=1, rounding=5, key=b"k" * 32)
    draws = [guard.round(7, {f"set{i}", "x"}) for i in range(4000)]  # a different unit set each time
    assert set(draws) == {5, 10}
    share_up = draws.count(10) / len(draws)
    assert share_up == pytest.approx(0.4, abs=0.04)  # P(up) = r/b = 2/5
    assert sum(draws) / len(draws) == pytest.approx(7, abs=0.2)  # unbiased: E = n
    same = {guard.round(7, {"a", "b"}) for _ in range(50)}
    assert len(same) == 1  # the same set always rounds the same way: repeats cannot be averaged
    assert guard.round(10, {"a"}) == 10 and Guard(k=1).round(7, {"a"}) == 7


def test_rounded_table(attack: Node) -> None:
    with attack.catalogue.session() as s:
        out = aggregates.count(s, ["cancer_type"], None, "patients", 5, Guard(k=5, rounding=5, key=b"z" * 32))
    assert out["rounding"] == 5 and all(c["count"] % 5 == 0 for c in out["cells"])
    truth = {"breast": 10, "lung": 12, "prostate": 8, "unknown": 6}
    for cell in out["cells"]:
        assert abs(cell["count"] - truth[cell["key"][0]]) < 5


def test_noisy_counts_cover_the_declared_domain(attack: Node) -> None:
    with attack.catalogue.session() as s:
        out = aggregates.count(s, ["cancer_type", "sex"], None, "patients", 5, Guard(k=5, epsilon=1.0))
        assert [tuple(c["key"]) for c in out["cells"]] == [(c, x) for c in DOMAINS["cancer_type"]
                                                           for x in DOMAINS["sex"]]
        assert all(c["count"] is None or c["count"] >= 5 for c in out["cells"])
        assert out["dp"] == {"mechanism": "laplace", "epsilon": 1.0} and out["total"] is None
        with pytest.raises(Refused) as refused:
            aggregates.count(s, ["body_part"], None, "patients", 5, Guard(k=5, epsilon=1.0))
        assert refused.value.rule == "dp_domain"


def test_laplace_scale() -> None:
    samples = [laplace(2.0) for _ in range(20000)]
    mean_abs = sum(abs(x) for x in samples) / len(samples)
    assert mean_abs == pytest.approx(2.0, rel=0.1)  # E|Lap(b)| = b

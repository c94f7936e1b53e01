from __future__ import annotations

from pathlib import Path

from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom
from incisive.node.quality import quality_report, render_html


def test_quality_report(node: Node, cohort: Path) -> None:
    import_dicom(node, cohort / "dicom", workers=1)
    import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
    with node.catalogue.session() as s:
        r = quality_report(s)
    assert r["cohort"]["instances"] > 0 and r["cohort"]["clinical_records"] > 0
    assert set(r["by_modality"]) <= {"CT", "MR", "MG"} and sum(r["by_modality"].values()) == r["cohort"]["series"]
    assert r["patients_without_clinical_record"] >= 1  # the generator leaves some out
    assert r["clinical_records_without_images"] >= 1
    assert r["clinical_completeness"]["diagnosis"] == 1.0 and r["clinical_completeness"]["stage"] < 1.0
    assert set(r["label_balance"]["lesion"]) <= {"0", "1"}
    geometry = next(iter(r["image_geometry"].values()))
    assert geometry["matrix"] and geometry["pixel_spacing_mm"]["min"] > 0
    assert r["series_without_pixel_data"]["count"] == 0
    assert r["quarantine"] and any("quarantine" in w for w in r["warnings"])
    html = render_html(r, "Data quality — <Test>")
    assert "<h2>Clinical completeness</h2>" in html and "&lt;Test&gt;" in html


def test_empty_node_report(sqlite_node: Node) -> None:
    with sqlite_node.catalogue.session() as s:
        r = quality_report(s)
    assert r["cohort"]["instances"] == 0 and r["warnings"] == []

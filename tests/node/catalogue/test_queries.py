from __future__ import annotations

from pathlib import Path

from incisive.node.catalogue import queries
from incisive.node.home import Node
from incisive.node.ingest.dicom_import import import_dicom


def test_stats_and_listings(node: Node, cohort: Path) -> None:
    report = import_dicom(node, cohort / "dicom", workers=1)
    with node.catalogue.session() as s:
        st = queries.stats(s)
        studies = queries.list_studies(s)
        series = queries.list_series(s)
        ct = queries.list_series(s, modality="ct")
        page = queries.list_studies(s, limit=2, offset=1)
    assert st["instances"] == report.counts["imported"] == sum(m["instances"] for m in st["by_modality"])
    assert st["bytes"] == sum(m["bytes"] for m in st["by_modality"]) > 0
    assert st["quarantined"] == report.counts["quarantined"]
    assert st["studies"] == len(studies) and st["series"] == len(series)
    assert all(r["modality"] == "CT" for r in ct)
    assert len(page) == 2 and page[0] == studies[1]
    for study in studies:
        assert study["patient"].startswith("P") and study["study_uid"].startswith("2.25.")
        assert study["modalities"]

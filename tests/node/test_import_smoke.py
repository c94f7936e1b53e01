from pathlib import Path

from incisive.node.catalogue import queries
from incisive.node.home import Node
from incisive.node.ingest.dicom_import import import_dicom


def test_import_and_reimport(node: Node, cohort: Path) -> None:
    first = import_dicom(node, cohort / "dicom", workers=1)
    assert first.counts["imported"] > 0
    assert first.counts["quarantined"] >= 1
    again = import_dicom(node, cohort / "dicom", workers=1)
    assert again.counts["imported"] == 0
    assert again.counts["duplicate"] == first.counts["imported"] + first.counts["quarantined"]
    with node.catalogue.session() as s:
        assert queries.stats(s)["instances"] == first.counts["imported"]

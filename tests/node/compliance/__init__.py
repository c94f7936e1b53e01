"""Tests of ``incisive compliance``; helpers shared by the test modules (real nodes, real documents)."""

from __future__ import annotations

from pathlib import Path

from incisive.node.compliance import store
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom

MINIMAL_PDF = b"""%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >> endobj
trailer << /Root 1 0 R >>
%%EOF
"""


def make_pdf(path: Path, marker: str = "") -> Path:
    """A small real PDF (its bytes differ by ``marker``, so its sha256 does)."""
    path.write_bytes(MINIMAL_PDF + f"% {marker}\n".encode())
    return path


def complete_record(home: Path, country: str = "DE") -> None:
    """Every fact only a person can give: contact, DPO, controller, legal basis, retention, node country."""
    store.set_contact(home, "Ann Admin", "ann.admin@hospital.example", "technical contact",
                      "Dora Protect", "dpo@hospital.example")
    store.set_field(home, "controller-name", "Test Hospital Foundation")
    store.set_field(home, "controller-address", "1 Hospital Street, 10115 Berlin")
    store.set_field(home, "legal-basis", "Art. 6(1)(e) and Art. 9(2)(j) GDPR; national research law")
    store.set_field(home, "retention-years", "10")
    store.set_field(home, "node-country", country)


def fill(node: Node, cohort: Path) -> Node:
    """The synthetic cohort imported through the node's own door (DICOM and clinical CSV)."""
    import_dicom(node, cohort / "dicom", workers=1)
    import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
    return node

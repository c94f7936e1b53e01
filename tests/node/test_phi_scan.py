"""After importing a cohort full of PHI, no original PHI value appears anywhere the node writes.

Scans bytes, not tags: every file under the node directory except the key file (store objects, quarantine,
SQLite catalogue and WAL, logs, config) and, for PostgreSQL, a text dump of every catalogue table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy import MetaData, select

from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom


def _needles(cohort: Path) -> set[bytes]:
    values = json.loads((cohort / "phi_manifest.json").read_text())
    needles: set[bytes] = set()
    for value in values:
        for variant in {value, value.upper(), value.replace("^", " "), value.replace("^", " ").upper()}:
            if len(variant) >= 4:
                needles.add(variant.encode())
                needles.add(variant.encode("utf-16-le"))
    return needles


def test_no_original_phi_anywhere(node: Node, cohort: Path) -> None:
    logging.getLogger("incisive").setLevel(logging.DEBUG)
    import_dicom(node, cohort / "dicom", workers=2)
    import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
    node.catalogue.dispose()  # flush SQLite WAL/handles before reading bytes
    blobs: dict[str, bytes] = {}
    for path in node.home.rglob("*"):
        if path.is_file() and path != node.key_path:
            blobs[str(path.relative_to(node.home))] = path.read_bytes()
    if node.catalogue.dialect != "sqlite":
        meta = MetaData()
        meta.reflect(node.catalogue.engine)
        with node.catalogue.engine.connect() as conn:
            for table in meta.sorted_tables:
                blobs[f"db:{table.name}"] = repr(conn.execute(select(table)).all()).encode()
    assert any(k.startswith("store/objects") for k in blobs) and any(k.startswith("quarantine/") for k in blobs)
    assert any(k.startswith("logs/") for k in blobs)
    needles = _needles(cohort)
    assert len(needles) > 100
    control = next(iter(sorted((cohort / "dicom").rglob("*.dcm")))).read_bytes()
    assert sum(n in control for n in needles) >= 10  # the scanner does find PHI in a source file
    leaks = sorted({(where, n.decode(errors="replace")) for where, blob in blobs.items() for n in needles if n in blob})
    assert leaks == []

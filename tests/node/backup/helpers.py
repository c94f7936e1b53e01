"""Shared helpers for backup tests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, select

from incisive.node.backup.config import Target
from incisive.node.home import Node
from incisive.node.ingest.dicom_import import import_dicom


def import_cohort(node: Node, folder: Path) -> None:
    report = import_dicom(node, folder, workers=1)
    assert report.counts["imported"] > 0


def dir_target(tmp_path: Path, name: str = "usb") -> Target:
    location = tmp_path / f"drive-{name}"
    location.mkdir(exist_ok=True)
    return Target(name=name, kind="dir", location=str(location))


def catalogue_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, ordered, for comparing two catalogues."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        out: dict[str, list[tuple[Any, ...]]] = {}
        with engine.connect() as conn:
            for name, tbl in sorted(meta.tables.items()):
                rows = conn.execute(select(tbl)).all()
                out[name] = sorted((tuple(r) for r in rows), key=repr)
        return out
    finally:
        engine.dispose()


def store_hashes(home: Path) -> dict[str, str]:
    """relative object path -> sha256 of the file bytes, for store and quarantine."""
    out = {}
    for area in ("store", "quarantine"):
        for path in sorted((home / area / "objects").rglob("*")):
            if path.is_file():
                out[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out

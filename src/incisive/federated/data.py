"""Read a node's own data for a bundle: clinical features from the catalogue, pixels from the object store.

Runs only at the node. Rows are split into train/test by a keyed-free hash of the pseudonym, so the split is
stable across rounds, jobs and processes without any state.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from incisive.node.catalogue.models import ClinicalRecord, Instance, Patient, Series, Study
from incisive.node.home import Node


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray
    keys: list[str] = field(default_factory=list)  # node-local identifiers (never sent anywhere)

    def __len__(self) -> int:
        return len(self.y)


def split_of(key: str, test_fraction: float) -> str:
    bucket = int(hashlib.sha256(f"split:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "train"


def clinical_rows(node: Node) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    with node.catalogue.session() as s:
        for pseudonym, fields, labels in s.execute(
            select(ClinicalRecord.pseudonym, ClinicalRecord.fields, ClinicalRecord.labels).order_by(
                ClinicalRecord.pseudonym)
        ):
            yield pseudonym, fields or {}, labels or {}


def patient_labels(node: Node, label: str) -> dict[str, int]:
    out = {}
    for pseudonym, _, labels in clinical_rows(node):
        value = labels.get(label)
        if value in (0, 1):
            out[pseudonym] = int(value)
    return out


def series_instances(node: Node, modalities: list[str]) -> Iterator[tuple[str, str, list[tuple[str, str]]]]:
    """(pseudonym, series uid, [(sop uid, object hash) ordered by instance number]) per series."""
    with node.catalogue.session() as s:
        q = (select(Patient.pseudonym, Series.series_uid, Instance.sop_uid, Instance.object_hash,
                    Instance.instance_number)
             .join(Study, Study.patient_id == Patient.id).join(Series, Series.study_id == Study.id)
             .join(Instance, Instance.series_id == Series.id)
             .where(Series.modality.in_(modalities), Instance.has_pixels.is_(True))
             .order_by(Series.series_uid, Instance.instance_number))
        current: tuple[str, str] | None = None
        items: list[tuple[str, str]] = []
        for pseudonym, series_uid, sop_uid, digest, _ in s.execute(q):
            if current and current[1] != series_uid:
                yield current[0], current[1], items
                items = []
            current = (pseudonym, series_uid)
            items.append((sop_uid, digest))
        if current:
            yield current[0], current[1], items


def read_pixels(node: Node, digest: str) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(node.store.get(digest)))
    arr: np.ndarray = ds.pixel_array.astype(np.float32)
    return arr

"""A node's own data read from its catalogue and object store, keyed by pseudonym: the trusted side.

:mod:`incisive.node.fl.materialise` reads through it to fill a job's sandbox input directory, and tests and
benchmarks use it as a :class:`incisive.federated.task.DataSource` for in-process reference runs. Bundle code never
gets this object: in the sandbox it reads :class:`incisive.federated.task.FileSource`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
from sqlalchemy import select

from incisive.federated.task import Dataset, split_of
from incisive.node.catalogue.models import ClinicalRecord, Instance, Patient, Series, Study
from incisive.node.home import Node

__all__ = ["Dataset", "NodeData", "split_of"]


class NodeData:
    """The read-only view of one node's rows (keys are pseudonyms: never for bundle code)."""

    def __init__(self, node: Node, test_fraction: float = 0.25) -> None:
        self._node = node
        self.test_fraction = test_fraction

    def split(self, row: str) -> str:
        return split_of(row, self.test_fraction)

    def clinical_rows(self) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        with self._node.catalogue.session() as s:
            for pseudonym, fields, labels in s.execute(
                select(ClinicalRecord.pseudonym, ClinicalRecord.fields, ClinicalRecord.labels).order_by(
                    ClinicalRecord.pseudonym)
            ):
                yield pseudonym, fields or {}, labels or {}

    def patient_labels(self, label: str) -> dict[str, int]:
        out = {}
        for pseudonym, _, labels in self.clinical_rows():
            value = labels.get(label)
            if value in (0, 1):
                out[pseudonym] = int(value)
        return out

    def series_instances(self, modalities: list[str]) -> Iterator[tuple[str, str, list[tuple[str, str]]]]:
        """(pseudonym, series uid, [(sop uid, object hash) ordered by instance number]) per series."""
        for pseudonym, series_uid, _, items in self.series_by_modality(modalities):
            yield pseudonym, series_uid, items

    def series_by_modality(self, modalities: list[str]) -> Iterator[tuple[str, str, str, list[tuple[str, str]]]]:
        """(pseudonym, series uid, modality, [(sop uid, object hash) by instance number]) per series, by uid."""
        with self._node.catalogue.session() as s:
            q = (select(Patient.pseudonym, Series.series_uid, Series.modality, Instance.sop_uid,
                        Instance.object_hash, Instance.instance_number)
                 .join(Study, Study.patient_id == Patient.id).join(Series, Series.study_id == Study.id)
                 .join(Instance, Instance.series_id == Series.id)
                 .where(Series.modality.in_(modalities), Instance.has_pixels.is_(True))
                 .order_by(Series.series_uid, Instance.instance_number))
            current: tuple[str, str, str] | None = None
            items: list[tuple[str, str]] = []
            for pseudonym, series_uid, modality, sop_uid, digest, _ in s.execute(q):
                if current and current[1] != series_uid:
                    yield current[0], current[1], current[2], items
                    items = []
                current = (pseudonym, series_uid, str(modality))
                items.append((sop_uid, digest))
            if current:
                yield current[0], current[1], current[2], items

    def read_pixels(self, digest: str) -> np.ndarray:
        import pydicom

        ds = pydicom.dcmread(io.BytesIO(self._node.store.get(digest)))
        arr: np.ndarray = ds.pixel_array.astype(np.float32)
        return arr

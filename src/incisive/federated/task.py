"""The contract between a model bundle's ``task.py`` and whoever runs it: functions of arrays, in a sandbox.

A bundle's ``task.py`` imports only this module (plus numpy / torch / monai): never node internals. It runs only
inside the sandbox (:mod:`incisive.federated.sandbox`: no network, no node directory, no pseudonyms) and gets its
data through a :class:`DataSource`. At a node that source is :class:`FileSource` over the job's read-only input
directory, which the trusted node runtime filled with exactly what the manifest declares
(:mod:`incisive.node.fl.materialise`): rows and items are keyed by random per-job ids, the map back to
pseudonyms and UIDs stays outside. The platform only ever calls :meth:`Task.build_model` (in its own sandbox).

* ``build_model(manifest) -> torch.nn.Module``
* ``load_data(source, manifest, split) -> Dataset`` with ``split`` in ``train`` / ``test`` / ``all``

The train/test split of a row is decided outside the sandbox (:func:`split_of`, a hash of the pseudonym, stable
across rounds, jobs and processes) and read with :meth:`DataSource.split`.

Input directory (``/in`` in the sandbox), written by the node, read by :class:`FileSource`:

* ``clinical.npz``: ``ids`` (str, one per patient), ``split`` (``train``/``test``), ``fields`` / ``labels``
  (declared names), ``field_values`` / ``label_values`` (float64, NaN = missing or not a number);
* ``series.json`` (image bundles): ``[{"row", "series", "modality", "instances": [[instance id, pixel key]]}]``
  in instance-number order, pixels in ``pixels/<key>.npy`` (float32);
* ``items.json``: the items an inference scores, in order (row ids, or ``series id/instance id``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from torch import nn

SPLITS = ("train", "test", "all")


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray
    keys: list[str] = field(default_factory=list)  # input ids (row ids, or "series id/instance id" for images)

    def __len__(self) -> int:
        return len(self.y)


def split_of(key: str, test_fraction: float) -> str:
    bucket = int(hashlib.sha256(f"split:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "train"


@runtime_checkable
class DataSource(Protocol):
    """What a bundle may read: the declared clinical fields and label, and the declared modalities' pixels."""

    def clinical_rows(self) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(row id, fields, labels) per patient, in a stable order."""
        ...

    def patient_labels(self, label: str) -> dict[str, int]:
        """row id → 0/1 for the patients whose clinical ``label`` is 0 or 1."""
        ...

    def series_instances(self, modalities: list[str]) -> Iterator[tuple[str, str, list[tuple[str, str]]]]:
        """(row id, series id, [(instance id, pixel key) ordered by instance number]) per series with pixels."""
        ...

    def read_pixels(self, key: str) -> np.ndarray:
        """The pixel array (float32) of one instance."""
        ...

    def split(self, row: str) -> str:
        """``train`` or ``test``: the row's split, decided by the node (stable across rounds and jobs)."""
        ...


class FileSource:
    """:class:`DataSource` over an input directory the node materialised (``/in`` in the sandbox)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        with np.load(self.root / "clinical.npz", allow_pickle=False) as z:
            self._ids = [str(i) for i in z["ids"]]
            self._split = dict(zip(self._ids, (str(v) for v in z["split"]), strict=True))
            fields, labels = [str(f) for f in z["fields"]], [str(n) for n in z["labels"]]
            fv, lv = z["field_values"], z["label_values"]
        self._rows = [(rid, _numbers(fields, fv[i]), _numbers(labels, lv[i])) for i, rid in enumerate(self._ids)]
        series = self.root / "series.json"
        self._series: list[dict[str, Any]] = json.loads(series.read_text()) if series.exists() else []

    def clinical_rows(self) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        yield from self._rows

    def patient_labels(self, label: str) -> dict[str, int]:
        return {rid: int(lab[label]) for rid, _, lab in self._rows if lab.get(label) in (0, 1)}

    def series_instances(self, modalities: list[str]) -> Iterator[tuple[str, str, list[tuple[str, str]]]]:
        for s in self._series:
            if s["modality"] in modalities:
                yield str(s["row"]), str(s["series"]), [(str(i), str(k)) for i, k in s["instances"]]

    def read_pixels(self, key: str) -> np.ndarray:
        if not key.isalnum():
            raise ValueError("not a pixel key")
        arr: np.ndarray = np.load(self.root / "pixels" / f"{key}.npy", allow_pickle=False)
        return arr

    def split(self, row: str) -> str:
        return self._split[row]


def _numbers(names: list[str], values: np.ndarray) -> dict[str, Any]:
    """Finite values by name; whole numbers as int (labels 0/1 read as ints, as from the catalogue)."""
    out: dict[str, Any] = {}
    for name, v in zip(names, values.tolist(), strict=True):
        if v == v and v not in (float("inf"), float("-inf")):
            out[name] = int(v) if float(v).is_integer() else v
    return out


class Task(Protocol):
    """A bundle's ``task.py`` module, as :func:`incisive.federated.bundle.load_task` returns it."""

    def build_model(self, manifest: dict[str, Any]) -> nn.Module: ...

    def load_data(self, source: DataSource, manifest: dict[str, Any], split: str) -> Dataset: ...


@dataclass(frozen=True)
class DeclaredOutput:
    """What a bundle's code may let out of the sandbox for one job type (everything else is "output rejected")."""

    parameters: bool = False  # the model's parameters: arrays named, shaped and typed as build_model declares
    metrics: tuple[str, ...] = ()  # finite numbers
    dp_metrics: tuple[str, ...] = ()  # added to ``metrics`` when the job runs with differential privacy
    histograms: tuple[str, ...] = ()  # score histograms (fixed bins, counts per bin)
    scores: bool = False  # one float per input item, in the order of ``items.json``

    def describe(self) -> list[str]:
        """One line per output, for people (``incisive node policy review``)."""
        lines = ["the model's parameters (names, shapes and dtypes of build_model's state)"] if self.parameters \
            else []
        if self.metrics:
            extra = f" (+ {', '.join(self.dp_metrics)} when DP)" if self.dp_metrics else ""
            lines.append(f"metrics: {', '.join(self.metrics)}{extra}")
        if self.histograms:
            lines.append(f"score histograms: {', '.join(self.histograms)}")
        if self.scores:
            lines.append("one float score per input item")
        return lines


DECLARED_OUTPUTS: dict[str, DeclaredOutput] = {
    "train": DeclaredOutput(parameters=True, metrics=("loss", "n"), dp_metrics=("dp_epsilon",)),
    "evaluate": DeclaredOutput(metrics=("loss", "n", "accuracy", "auc"), histograms=("neg", "pos")),
    "infer": DeclaredOutput(scores=True),
}

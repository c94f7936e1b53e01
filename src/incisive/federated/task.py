"""The contract between a model bundle's ``task.py`` and whoever runs it (node or platform).

A bundle's ``task.py`` imports only this module (plus numpy / torch / monai): never node internals. It gets its
data through :class:`DataSource`, which the node implements over its own catalogue and object store
(:class:`incisive.node.fl.data.NodeData`); the platform only ever calls :meth:`Task.build_model`.

* ``build_model(manifest) -> torch.nn.Module``
* ``load_data(source, manifest, split) -> Dataset`` with ``split`` in ``train`` / ``test`` / ``all``

Rows are split into train/test by :func:`split_of`, a hash of the pseudonym: stable across rounds, jobs and
processes without any state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from torch import nn

SPLITS = ("train", "test", "all")


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


@runtime_checkable
class DataSource(Protocol):
    """What a bundle may read at a node: pseudonymised clinical rows and de-identified pixels, nothing else."""

    def clinical_rows(self) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(pseudonym, fields, labels) per clinical record, ordered by pseudonym."""
        ...

    def patient_labels(self, label: str) -> dict[str, int]:
        """pseudonym → 0/1 for the patients whose clinical ``label`` is 0 or 1."""
        ...

    def series_instances(self, modalities: list[str]) -> Iterator[tuple[str, str, list[tuple[str, str]]]]:
        """(pseudonym, series uid, [(sop uid, object hash) ordered by instance number]) per series with pixels."""
        ...

    def read_pixels(self, digest: str) -> np.ndarray:
        """The pixel array (float32) of one stored instance."""
        ...


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

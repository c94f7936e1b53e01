"""tabular-risk: logistic regression on declared clinical features (arrays the node wrote into the sandbox).

Preprocessing is fixed by the bundle (log1p, then the reference mean/std in the manifest), so every node
transforms its rows identically and no statistic has to leave a node.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from incisive.federated.task import Dataset, DataSource


def build_model(manifest: dict[str, Any]) -> nn.Module:
    return nn.Linear(len(manifest["inputs"]["features"]), 1)


def transform(manifest: dict[str, Any], raw: np.ndarray) -> np.ndarray:
    p = manifest["params"]
    x = (np.log1p(np.clip(raw, 0, None)) - np.asarray(p["reference_log1p_mean"])) / np.asarray(
        p["reference_log1p_std"])
    out: np.ndarray = x.astype(np.float32)
    return out


def load_data(source: DataSource, manifest: dict[str, Any], split: str) -> Dataset:
    features: list[str] = manifest["inputs"]["features"]
    label: str = manifest["inputs"]["label"]
    rows, ys, keys = [], [], []
    for row, fields, labels in source.clinical_rows():
        if labels.get(label) not in (0, 1) or any(not isinstance(fields.get(f), int | float) for f in features):
            continue
        if split != "all" and source.split(row) != split:
            continue
        rows.append([float(fields[f]) for f in features])
        ys.append(int(labels[label]))
        keys.append(row)
    raw = np.asarray(rows, dtype=np.float64).reshape(-1, len(features))
    return Dataset(transform(manifest, raw), np.asarray(ys, dtype=np.float32), keys)

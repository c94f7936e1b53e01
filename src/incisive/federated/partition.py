"""Reference data for the tabular bundle: scikit-learn's breast-cancer set split across nodes.

``non-iid`` uses a Dirichlet(alpha) label skew per class (node sizes and class balance differ); ``iid`` a
shuffled equal split. Each part is written as a clinical CSV (synthetic patient ids) for the normal import.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

LABEL = "label_malignant"


def breast_cancer() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    names = [re.sub(r"[^a-z0-9]+", "_", n.lower()).strip("_") for n in d.feature_names]
    x: np.ndarray = np.asarray(d.data, dtype=np.float64)
    y: np.ndarray = (1 - np.asarray(d.target)).astype(np.int64)  # 1 = malignant
    return x, y, names


def partition(y: np.ndarray, parts: int, scheme: str, seed: int = 0, alpha: float = 0.5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(len(y)), parts)]
    if scheme != "non-iid":
        raise ValueError("scheme must be iid or non-iid")
    while True:
        out: list[list[int]] = [[] for _ in range(parts)]
        for cls in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == cls))
            shares = rng.dirichlet([alpha] * parts)
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                out[k].extend(int(i) for i in chunk)
        # every node needs both classes and enough rows for a train/test split
        if all(len(o) >= 20 and len(set(y[o].tolist())) == 2 for o in out):
            return [np.sort(np.asarray(o)) for o in out]


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, names: list[str], idx: np.ndarray, prefix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", *names, LABEL])
        for i in idx:
            w.writerow([f"{prefix}{int(i):05d}", *(repr(float(v)) for v in x[i]), int(y[i])])
    return path

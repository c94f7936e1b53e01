"""Combining node answers without revealing what a node suppressed; optional Laplace noise.

* A node's number below the platform's k is treated as suppressed too (the platform never lowers a node's k).
* A combined cell is the sum of the nodes' **published** parts: ``complete`` says whether every node published
  its part, ``suppressed_nodes`` how many did not. Suppressed parts are never estimated or added.
* A combined margin or total is published only when every answering node published it; a node publishes one
  only when every cell under it is published (see :func:`incisive.common.federated.suppress`). So no published
  total minus published cells equals a suppressed cell (secondary suppression).
* Differential privacy (``epsilon``): each published cell gets Laplace(1/ε) noise, rounded and clamped at 0;
  margins and the total are withheld so that the release is the cells alone. See docs/platform.md for the
  sensitivity argument and its limit for multi-valued fields.
"""

from __future__ import annotations

import math
import random
from typing import Any

_rng = random.SystemRandom()


def _published(value: Any, k: int) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= k else None


def combine_counts(by: list[str], answers: dict[str, dict[str, Any]], k: int) -> dict[str, Any]:
    cells: dict[tuple[str, ...], dict[str, Any]] = {}
    margins: dict[str, dict[str, int | None]] = {field: {} for field in by} if len(by) > 1 else {}
    total: int | None = 0 if answers else None
    for answer in answers.values():
        for cell in answer.get("cells", []):
            key = tuple(str(v) for v in cell.get("key", []))
            if len(key) != len(by):
                continue
            entry = cells.setdefault(key, {"key": list(key), "count": 0, "complete": True, "suppressed_nodes": 0})
            value = _published(cell.get("count"), k)
            if value is None:
                entry["complete"] = False
                entry["suppressed_nodes"] += 1
            else:
                entry["count"] += value
        for field in margins:
            for row in answer.get("margins", {}).get(field, []):
                value, current = _published(row.get("count"), k), margins[field].get(str(row.get("value")), 0)
                margins[field][str(row.get("value"))] = None if value is None or current is None else current + value
        node_total = _published(answer.get("total"), k)
        total = None if node_total is None or total is None else total + node_total
    for entry in cells.values():
        if entry["suppressed_nodes"] and entry["count"] == 0:
            entry["count"] = None
    # a margin over cells some node did not list at all is fine (that node has none there)
    return {
        "cells": [cells[key] for key in sorted(cells)],
        "margins": {f: [{"value": v, "count": n} for v, n in sorted(rows.items())] for f, rows in margins.items()},
        "total": total,
    }


def laplace(scale: float) -> float:
    return _rng.expovariate(1 / scale) - _rng.expovariate(1 / scale)


def add_noise(combined: dict[str, Any], epsilon: float) -> dict[str, Any]:
    cells = []
    for cell in combined["cells"]:
        count = cell["count"]
        noisy = None if count is None else max(0, round(count + laplace(1 / epsilon)))
        cells.append({**cell, "count": noisy})
    return {"cells": cells, "margins": {}, "total": None}


def combine_summary(answers: dict[str, dict[str, Any]], k: int) -> dict[str, Any]:
    n, total, squares, suppressed = 0, 0.0, 0.0, 0
    for answer in answers.values():
        part = _published(answer.get("n"), k)
        if part is None:
            suppressed += 1
            continue
        n += part
        total += float(answer.get("sum") or 0.0)
        squares += float(answer.get("sumsq") or 0.0)
    if n == 0:
        return {"n": None, "mean": None, "sd": None, "suppressed_nodes": suppressed}
    mean = total / n
    sd = math.sqrt(max(0.0, (squares - n * mean * mean) / (n - 1))) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd, "suppressed_nodes": suppressed}

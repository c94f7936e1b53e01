"""Combining node answers (already checked against the agent protocol) without revealing what a node withheld.

* A node lists only the cells it may show (see :mod:`incisive.node.disclosure`); a combined cell is the sum of
  the parts listed. A node that does not list a cell has no units there or withheld them: the two look alike,
  and nothing is estimated or added for it. ``suppressed`` is the sum of the nodes' suppressed figures (``null``
  when some node withheld its own, i.e. had 1 to k−1 units in no shown cell); ``complete`` says that no node
  withheld anything; ``withheld_by`` names the rules that withheld something, at some node.
* A combined margin row or total is given only when every answering node gave its own (secondary suppression
  across nodes: no combined total minus combined cells reveals a withheld part).
* Noisy counts (ε): each node adds its own Laplace noise over the declared domain; a part shown as ``null``
  (noisy value below k) adds nothing; a cell is ``null`` when no node showed a part. No margins, no total.
"""

from __future__ import annotations

import math
from typing import Any

from incisive.common.protocol import CountResult, SummaryResult


def combine_counts(by: list[str], answers: dict[str, CountResult]) -> dict[str, Any]:
    cells: dict[tuple[str, ...], int | None] = {}
    for answer in answers.values():
        for cell in answer.cells:
            key = tuple(cell.key)
            current = cells.get(key)
            cells[key] = current if cell.count is None else (current or 0) + cell.count
    margins: dict[str, list[dict[str, Any]]] = {}
    noisy = any(a.dp is not None for a in answers.values())
    if answers and len(by) > 1 and not noisy:
        for field in by:
            per_node = [{row.value: row.count for row in a.margins.get(field, [])} for a in answers.values()]
            common = set.intersection(*(set(rows) for rows in per_node))
            margins[field] = [{"value": v, "count": sum(rows[v] for rows in per_node)} for v in sorted(common)]
    totals = [a.total for a in answers.values()]
    hidden = [a.suppressed for a in answers.values()]
    withheld = sorted({rule for a in answers.values() for rule in a.withheld_by})
    return {
        "cells": [{"key": list(key), "count": cells[key]} for key in sorted(cells)],
        "margins": margins,
        "total": None if noisy or not answers or None in totals else sum(t or 0 for t in totals),
        "suppressed": None if noisy or not answers or None in hidden else sum(h or 0 for h in hidden),
        "complete": bool(answers) and not withheld and not noisy,
        "withheld_by": withheld,
    }


def combine_summary(answers: dict[str, SummaryResult]) -> dict[str, Any]:
    n, total, squares, suppressed = 0, 0.0, 0.0, 0
    for answer in answers.values():
        if answer.n is None:
            suppressed += 1
            continue
        n += answer.n
        total += float(answer.sum or 0.0)
        squares += float(answer.sumsq or 0.0)
    if n == 0:
        return {"n": None, "mean": None, "sd": None, "suppressed_nodes": suppressed}
    mean = total / n
    sd = math.sqrt(max(0.0, (squares - n * mean * mean) / (n - 1))) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd, "suppressed_nodes": suppressed}

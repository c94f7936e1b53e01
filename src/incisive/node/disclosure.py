"""The node's disclosure control of a count table: what may leave the node, computed from the unit sets.

Rules, in order (names as in :data:`incisive.common.query_spec.RULES`):

* ``min_subset`` / ``filter_value`` (only with a ``where``): the filtered units and the rest of the node's units
  must each number at least max(min_subset, k), and every filter value must have at least k units on its own;
  otherwise the job is refused (:class:`Refused`), nothing is computed;
* ``min_cell_count``: a cell with fewer than k units is **not listed at all**, so which combinations exist is
  not revealed; one ``suppressed`` figure per table says how many units are in no shown cell (itself withheld,
  ``null``, when 1 to k−1);
* secondary suppression, over the cells that are shown: a margin row or the total is published only when it has
  at least k units and the units it holds beyond the shown cells number 0 or at least k (so a margin or total
  minus shown cells never gives a small number); a margin row that cannot be published is not listed;
* ``overlap``: a number whose unit set differs from one already answered to this researcher or project by 1 to
  k−1 units is withheld (:mod:`incisive.node.overlap`);
* ``rounding``: every published number is randomly rounded to the policy's base: n = qb + r goes up to (q+1)b
  with probability r/b, else down to qb, so it is unbiased (E = n) with variance r(b−r). The coin is keyed by the
  unit set (HMAC under the node's key), so asking again gives the same rounding and averaging repeats learns
  nothing;
* with ε (``epsilon``): the cells are the whole declared domain (:data:`incisive.common.query_spec.DOMAINS`),
  each count gets Laplace(1/ε) noise here on the node (rounded, clamped at 0) and is shown only when the noisy
  value is ≥ k; empty and small cells are listed alike. No margins, total or suppressed figure.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from incisive.common.query_spec import DOMAINS, MAX_DP_CELLS, OTHER
from incisive.node.overlap import OverlapSession

Key = tuple[str, ...]
Units = set[Any]
_rng = random.SystemRandom()


class Refused(Exception):
    """A job refused by a named rule; the message is shown to the researcher (no counts, no values)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass
class Guard:
    """What the node enforces on one count job (built by the agent from its policy and the job)."""

    k: int
    min_subset: int = 1
    rounding: int = 0
    overlap: OverlapSession | None = None
    epsilon: float | None = None
    key: bytes = b""
    withheld: set[str] = field(default_factory=set)

    def round(self, n: int, units: Units) -> int:
        base = self.rounding
        if base < 2 or n % base == 0:
            return n
        digest = hmac.new(self.key, b"round|" + _digest(units), hashlib.sha256).digest()
        coin = int.from_bytes(digest[:8], "big") / 2**64
        down = n - n % base
        return down + base if coin < (n % base) / base else down

    def publishable(self, units: Units) -> bool:
        """Overlap control, the last check before a number is published (an accepted set is recorded)."""
        if self.overlap is not None and not self.overlap.allows(units):
            self.withheld.add("overlap")
            return False
        return True


def _digest(units: Units) -> bytes:
    return hashlib.sha256("\x1f".join(sorted(map(str, units))).encode()).digest()


def check_subset(filtered: Units, population: Units, value_units: Mapping[str, Units], guard: Guard,
                 unit: str) -> None:
    """Subset rules of a filtered query; raises :class:`Refused` (never says which side was small)."""
    for name, units in value_units.items():  # (checked first: the more specific rule, naming the filter)
        if len(units) < guard.k:
            raise Refused("filter_value", f"refused by rule filter_value: the value of filter {name!r} must "
                                          f"have at least {guard.k} {unit} at this node")
    need = max(guard.min_subset, guard.k)
    if len(filtered) < need or len(population) - len(filtered) < need:
        raise Refused("min_subset", f"refused by rule min_subset: the filtered {unit} and the rest of this "
                                    f"node's {unit} must each number at least {need}")


def protect(cells: Mapping[Key, Units], by: Sequence[str], margins: Sequence[Mapping[str, Units]], total: Units,
            guard: Guard) -> dict[str, Any]:
    """The safe part of an exact count table (see the module docstring)."""
    k = guard.k
    shown: dict[Key, Units] = {}
    for key in sorted(cells):
        units = cells[key]
        if len(units) < k:
            guard.withheld.add("min_cell_count")
        elif guard.publishable(units):
            shown[key] = units
    covered: Units = set().union(*shown.values()) if shown else set()

    def rest_ok(rest: Units) -> bool:  # what a margin or total adds over the shown cells: 0 or a safe number
        return not rest or (len(rest) >= k and guard.publishable(rest))

    out_margins: dict[str, list[dict[str, Any]]] = {}
    if len(by) > 1:
        for i, name in enumerate(by):
            rows = []
            for value in sorted(margins[i]):
                units = margins[i][value]
                inside: Units = set().union(*(u for key, u in shown.items() if key[i] == value))
                if len(units) >= k and rest_ok(units - inside) and guard.publishable(units):
                    rows.append({"value": value, "count": guard.round(len(units), units)})
            out_margins[name] = rows
    hidden = total - covered
    hidden_ok = rest_ok(hidden)
    suppressed = (guard.round(len(hidden), hidden) if hidden else 0) if hidden_ok else None
    published_total = (guard.round(len(total), total)
                       if hidden_ok and len(total) >= k and guard.publishable(total) else None)
    if guard.overlap is not None:
        guard.overlap.commit()
    return {
        "cells": [{"key": list(key), "count": guard.round(len(units), units)} for key, units in shown.items()],
        "margins": out_margins,
        "total": published_total,
        "suppressed": suppressed,
        "withheld_by": sorted(guard.withheld),
    }


def domain_key(by: Sequence[str], key: Key) -> Key:
    return tuple(value if value in DOMAINS[name] else OTHER for name, value in zip(by, key, strict=True))


def check_domain(by: Sequence[str]) -> None:
    missing = [name for name in by if name not in DOMAINS]
    if missing:
        raise Refused("dp_domain", f"refused by rule dp_domain: {missing[0]} has no declared value domain; noisy "
                                   f"counts group by {', '.join(DOMAINS)}")
    size = 1
    for name in by:
        size *= len(DOMAINS[name])
    if size > MAX_DP_CELLS:
        raise Refused("dp_domain", f"refused by rule dp_domain: {size} cells in the declared domain of these "
                                   f"fields (at most {MAX_DP_CELLS})")


def laplace(scale: float) -> float:
    return _rng.expovariate(1 / scale) - _rng.expovariate(1 / scale)


def noisy(cells: Mapping[Key, Units], by: Sequence[str], guard: Guard) -> dict[str, Any]:
    """Every cell of the declared domain with Laplace(1/ε) noise; shown when the noisy count is ≥ k."""
    assert guard.epsilon is not None
    check_domain(by)
    merged: dict[Key, Units] = {}
    for key, units in cells.items():
        merged.setdefault(domain_key(by, key), set()).update(units)
    out = []
    for key in itertools.product(*(DOMAINS[name] for name in by)):
        value = max(0, round(len(merged.get(key, ())) + laplace(1 / guard.epsilon)))
        out.append({"key": list(key), "count": value if value >= guard.k else None})
    return {"cells": out, "margins": {}, "total": None, "suppressed": None,
            "withheld_by": ["min_cell_count"] if any(c["count"] is None for c in out) else [],
            "dp": {"mechanism": "laplace", "epsilon": guard.epsilon}}


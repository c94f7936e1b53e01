"""Checks of what a sandbox returns (declared outputs only); each raises OutputRejected with a PHI-free reason.

Reasons name arrays and metric keys the *node* declared, never a value or a name the bundle chose.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from incisive.federated.sandbox.wire import OutputRejected


def check_arrays(got: Mapping[str, np.ndarray], expected: Sequence[tuple[str, tuple[int, ...], str]],
                 narrower_floats: bool = False) -> None:
    """Exactly the expected names (in any order), each with its shape and dtype, all values finite.

    With ``narrower_floats`` a floating array may come back in a narrower float than declared (float32 for
    float64: the model trains in float32 while SecAgg+ dequantises the global model to float64), never a wider
    one nor another kind: the reply can carry no more bits than were sent.
    """
    names = [name for name, _, _ in expected]
    missing = [n for n in names if n not in got]
    if missing:
        raise OutputRejected(f"missing array(s) {', '.join(missing[:5])}")
    extra = len(set(got) - set(names))
    if extra:
        raise OutputRejected(f"{extra} undeclared array(s)")
    for name, shape, dtype in expected:
        value = got[name]
        if not isinstance(value, np.ndarray):
            raise OutputRejected(f"array {name} is not an array")
        if tuple(value.shape) != tuple(shape):
            raise OutputRejected(f"array {name} has shape {tuple(value.shape)}, declared {tuple(shape)}")
        want = np.dtype(dtype)
        narrower = (narrower_floats and want.kind == "f" and value.dtype.kind == "f"
                    and value.dtype.itemsize <= want.itemsize)
        if value.dtype != want and not narrower:
            raise OutputRejected(f"array {name} has dtype {value.dtype.str}, declared {np.dtype(dtype).str}")
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise OutputRejected(f"array {name} holds NaN or infinite values")


def check_metrics(got: Mapping[str, Any], allowed: Collection[str]) -> dict[str, float | int]:
    """Only allowed keys, each a finite int or float (no bool, str, list, None); returns them."""
    if not isinstance(got, Mapping):
        raise OutputRejected("metrics are not an object")
    extra = [k for k in got if k not in allowed]
    if extra:
        raise OutputRejected(f"{len(extra)} undeclared metric(s)")
    out: dict[str, float | int] = {}
    for key, value in got.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OutputRejected(f"metric {key} is not a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise OutputRejected(f"metric {key} is NaN or infinite")
        out[key] = value
    return out


def check_scores(got: np.ndarray, n: int) -> None:
    """One finite float per input: shape (n,) (or (n, 1)), a float dtype."""
    if not isinstance(got, np.ndarray):
        raise OutputRejected("scores are not an array")
    if got.dtype.kind != "f":
        raise OutputRejected(f"scores have dtype {got.dtype.str}, expected floats")
    if tuple(got.shape) not in ((n,), (n, 1)):
        raise OutputRejected(f"scores have shape {tuple(got.shape)}, expected ({n},)")
    if not np.isfinite(got).all():
        raise OutputRejected("scores hold NaN or infinite values")


MAX_STATE_VALUES = 500_000_000


def check_initial_state(got: Mapping[str, np.ndarray]) -> None:
    """A model's initial state (``init``): parameters named p0..pN, numeric, at most :data:`MAX_STATE_VALUES`
    values in all, finite. It sets the job's parameter spec, so the node and the platform check it alike."""
    names = [f"p{i}" for i in range(len(got))]
    if not got or sorted(got) != sorted(names):
        raise OutputRejected("output rejected: the initial model state is not a list of parameters p0..pN")
    if sum(a.size for a in got.values()) > MAX_STATE_VALUES or any(a.dtype.kind not in "fiu" for a in got.values()):
        raise OutputRejected("output rejected: the initial model state is not a bounded set of numeric arrays")
    if not all(np.isfinite(a).all() for a in got.values()):
        raise OutputRejected("output rejected: the initial model state is not finite")

"""What the sandboxed child can be asked to do: ``OPS[op](task, manifest, args, arrays) -> (result, arrays)``.

These functions run **inside** the sandbox, next to the bundle's code; nothing they return is trusted (the node
checks it with :mod:`incisive.federated.sandbox.validate`). Paths the child may use come from
:func:`inputs_dir` and :func:`scratch_dir` (``/in`` and ``/scratch`` under bubblewrap).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from incisive.federated.sandbox.paths import INPUTS_ENV, SCRATCH_ENV, inputs_dir, scratch_dir

Op = Callable[[ModuleType, dict[str, Any], dict[str, Any], dict[str, np.ndarray]],
              tuple[dict[str, Any], dict[str, np.ndarray]]]

__all__ = ["INPUTS_ENV", "OPS", "SCRATCH_ENV", "Op", "inputs_dir", "scratch_dir"]


def to_numpy(value: Any) -> np.ndarray:
    """A tensor or array-like as a numpy array (its own dtype: the trusted side checks names/shapes/dtypes)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def ping(task: ModuleType, manifest: dict[str, Any], args: dict[str, Any],
         arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Liveness, the worker's CPU seconds so far, and an echo of the request's arrays (the wire round trip)."""
    cpu = os.times()
    return ({"pong": True, "pid": os.getpid(), "python": platform.python_version(),
             "cpu_s": round(cpu.user + cpu.system, 3)}, dict(arrays))


def state(task: ModuleType, manifest: dict[str, Any], args: dict[str, Any],
          arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``build_model(manifest)`` → its state_dict as arrays named by key, plus ``{"names": [...]}`` in order
    (generic: any object with ``state_dict()``; the FL ``init`` of :mod:`.fl_ops` seeds and names them p0…)."""
    state = task.build_model(manifest).state_dict()
    out = {str(k): to_numpy(v) for k, v in state.items()}
    return {"names": list(out)}, out


OPS: dict[str, Op] = {
    "ping": ping,
    "state": state,
    "init": state,
}


def _with_fl_ops() -> None:
    """The federated-learning operations (:mod:`.fl_ops`: init, size, fit, evaluate, infer) join the table."""
    from incisive.federated.sandbox.fl_ops import FL_OPS

    OPS.update(FL_OPS)


_with_fl_ops()

"""The sandboxed worker: ``python -m incisive.federated.sandbox.child --bundle DIR``.

Runs inside the sandbox only. It keeps a private duplicate of fd 1 for replies and points fd 1 at stderr (so a
bundle's ``print`` cannot corrupt the protocol) and fd 0 at ``/dev/null`` after keeping a duplicate for requests,
imports the bundle's ``task.py`` (its top-level code runs here, never in the node), writes a hello frame, then
answers requests until its input closes: ``ops.OPS[op](task, manifest, args, arrays)``. A bundle exception
crosses as its type name only; the traceback goes to stderr, which the runner writes to the node-local log.
"""

from __future__ import annotations

import argparse
import builtins
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from incisive.federated.sandbox import wire
from incisive.federated.sandbox.ops import OPS

MODULE_NAME = "incisive_bundle_task"


def _private_fds() -> tuple[int, int]:
    """(request fd, reply fd): duplicates of 0/1, then 0 → /dev/null and 1 → stderr."""
    req, rep = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return req, rep


def _import_task(bundle: Path) -> tuple[ModuleType, dict[str, Any]]:
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    spec = importlib.util.spec_from_file_location(MODULE_NAME, bundle / "task.py")
    if spec is None or spec.loader is None:
        raise ImportError("cannot load task.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module, manifest


def _error(exc: BaseException, where: str) -> dict[str, Any]:
    print(f"sandbox child: {where} raised:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()
    return {"ok": False, "error": builtin_name(exc)}


def builtin_name(exc: BaseException) -> str:
    """The nearest built-in exception type (numpy's _ArrayMemoryError → MemoryError); the node shows only that."""
    return next((t.__name__ for t in type(exc).__mro__ if getattr(builtins, t.__name__, None) is t),
                "BaseException")


def serve(bundle: Path) -> int:
    req, rep = _private_fds()
    try:
        task, manifest = _import_task(bundle)
    except BaseException as exc:  # SystemExit/KeyboardInterrupt from bundle code too
        wire.write_frame(rep, _error(exc, "importing task.py"))
        return 1
    wire.write_frame(rep, {"ok": True, "hello": {"pid": os.getpid()}})
    while True:
        try:
            header, arrays = wire.read_frame(req, 1 << 62)
        except wire.ChildGone:
            return 0
        op = str(header.get("op"))
        try:
            fn = OPS[op]
        except KeyError:
            wire.write_frame(rep, {"ok": False, "error": "UnknownOp"})
            continue
        try:
            result, out = fn(task, manifest, dict(header.get("args") or {}), arrays)
            reply: dict[str, Any] = {"ok": True, "result": result}
            out_arrays: dict[str, np.ndarray] | None = out
        except BaseException as exc:
            reply, out_arrays = _error(exc, f"op {op}"), None
        try:
            wire.write_frame(rep, reply, out_arrays)
        except (TypeError, ValueError) as exc:  # a result that is not JSON or arrays that cannot be saved
            wire.write_frame(rep, _error(exc, f"encoding the reply of op {op}"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="incisive.federated.sandbox.child")
    parser.add_argument("--bundle", type=Path, required=True)
    sys.exit(serve(parser.parse_args().bundle))


if __name__ == "__main__":
    main()

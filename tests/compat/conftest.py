"""Helpers for the compat tests: every check names the dependency attribute it is about, so an upgrade that
removes or reshapes one fails with the attribute's name and the compat module to port."""

from __future__ import annotations

import inspect
from typing import Any


def attr(owner: Any, name: str, port: str) -> Any:
    """``owner.name``, or a failure that names it and the compat module that depends on it."""
    if inspect.ismodule(owner):
        label = owner.__name__
    else:
        kind = owner if inspect.isclass(owner) else type(owner)
        label = f"{kind.__module__}.{kind.__qualname__}" + ("" if owner is kind else " instance")
    assert hasattr(owner, name), f"{label}.{name} is gone in the installed release: port {port}"
    return getattr(owner, name)


def params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def keyword_params(fn: Any) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

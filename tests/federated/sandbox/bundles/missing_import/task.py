"""Hostile: imports a module that is not installed (no pip at run time)."""

import incisive_definitely_not_installed  # noqa: F401


def build_model(manifest):
    raise AssertionError("unreachable")

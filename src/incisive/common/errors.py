"""Errors with a clear, PHI-free message and an exit code for the CLI."""

from __future__ import annotations


class IncisiveError(Exception):
    """Base class: the message is shown to the user as is, so it must never hold PHI."""

    exit_code = 1


class ConfigError(IncisiveError):
    """Node configuration missing or invalid."""

    exit_code = 2


class InputError(IncisiveError):
    """Bad user input (file, CSV, argument)."""

    exit_code = 2


class CatalogueUnavailable(IncisiveError):
    """The catalogue database cannot be reached."""

    exit_code = 3


class IntegrityError(IncisiveError):
    """Stored bytes do not match their content address."""

    exit_code = 4

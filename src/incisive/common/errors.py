"""Errors with a clear, PHI-free message and an exit code for the CLI (from :mod:`incisive.common.exit_codes`)."""

from __future__ import annotations

from incisive.common.exit_codes import ExitCode


class IncisiveError(Exception):
    """Base class: the message is shown to the user as is, so it must never hold PHI."""

    exit_code: ExitCode = ExitCode.PROBLEMS


class ConfigError(IncisiveError):
    """Node configuration missing or invalid."""

    exit_code = ExitCode.INVALID


class InputError(IncisiveError):
    """Bad user input (file, CSV, argument)."""

    exit_code = ExitCode.INVALID


class CatalogueUnavailable(IncisiveError):
    """The catalogue database cannot be reached."""

    exit_code = ExitCode.CATALOGUE_UNAVAILABLE


class IntegrityError(IncisiveError):
    """Stored bytes do not match their content address."""

    exit_code = ExitCode.INTEGRITY

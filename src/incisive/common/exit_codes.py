"""The one table of the exit codes of ``incisive`` commands (README, *Errors*; docs/readiness.md for checks).

Every ``sys.exit``/``typer.Exit`` and every error class's ``exit_code`` takes its value from :class:`ExitCode`
(tests/common/test_exit_codes.py checks that each code is distinct and that no command exits with a bare number).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """An exit code and what it means; ``ExitCode.X.__doc__`` is its one-line meaning."""

    def __new__(cls, value: int, doc: str) -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.__doc__ = doc
        return member

    OK = 0, "Success (node check: every row passes, manual rows aside)."
    PROBLEMS = 1, ("Problems found: a verification found something wrong (node fsck, backup run/verify, audit "
                   "verify), a followed FL job or inference did not complete (refused, failed, expired, still "
                   "pending), or node check has warnings only; also any other incisive error.")
    INVALID = 2, ("Bad input or configuration: a missing or invalid node/platform directory, option, file or "
                  "argument, an error the platform answered; node check: at least one requirement fails.")
    CATALOGUE_UNAVAILABLE = 3, "The catalogue database cannot be reached."
    INTEGRITY = 4, "Stored bytes do not match their content address (run 'incisive node fsck')."
    AGENT_REVOKED = 5, "The platform refused this node's agent (revoked or unknown): enrol it again."
    FLOWER_FAILED = 6, ("The Flower runtime of a federated job failed: the SuperLink exited or did not start, "
                        "'flwr run' failed, or the job did not finish in time.")

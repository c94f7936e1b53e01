"""Service errors with an HTTP status; the message is returned to the client as is (never PHI, never secrets)."""

from __future__ import annotations

from incisive.common.errors import IncisiveError
from incisive.common.exit_codes import ExitCode


class PlatformError(IncisiveError):
    status_code = 400
    exit_code = ExitCode.INVALID


class BadRequest(PlatformError):
    status_code = 422


class Unauthorized(PlatformError):
    status_code = 401


class Forbidden(PlatformError):
    status_code = 403


class NotFound(PlatformError):
    status_code = 404


class Conflict(PlatformError):
    status_code = 409


class Gone(PlatformError):
    status_code = 410


class TooManyRequests(PlatformError):
    """Failed authentication back-off or lockout (:mod:`incisive.common.throttle`); answered with Retry-After."""

    status_code = 429

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed authentication attempts; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s

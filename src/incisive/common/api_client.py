"""A user's HTTP client for the platform API (``--platform URL --token …``): one place for the bearer token,
timeouts and turning transport failures and error statuses into one clear line."""

from __future__ import annotations

from typing import Any

import httpx

from incisive.common.errors import IncisiveError, InputError
from incisive.common.exit_codes import ExitCode


class RemoteError(IncisiveError):
    exit_code = ExitCode.INVALID


class ApiClient:
    def __init__(self, url: str, token: str, timeout_s: float = 60.0) -> None:
        if not token:
            raise InputError("give --token or set INCISIVE_TOKEN")
        self.url, self.token, self.timeout_s = url.rstrip("/"), token, timeout_s

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON of the answer; :class:`RemoteError` naming the status and the platform's ``detail``."""
        try:
            response = httpx.request(method, self.url + path, timeout=self.timeout_s,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              **kwargs.pop("headers", {})}, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach the platform: {type(exc).__name__}") from None
        if response.status_code >= 300:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:200]
            raise RemoteError(f"platform answered {response.status_code}: {detail}")
        return response.json()

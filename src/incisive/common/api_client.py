"""A user's HTTP client for the platform API (``--platform URL --token …``): one place for the bearer token,
timeouts and turning transport failures and error statuses into one clear line.

TLS: the platform's certificate is verified against the system store, or only against ``$INCISIVE_CA_FILE``
when set (a federation's private CA, ``platform init --ca``); an untrusted certificate is named as such."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from incisive.common import tls
from incisive.common.errors import IncisiveError, InputError
from incisive.common.exit_codes import ExitCode

CA_FILE_ENV = "INCISIVE_CA_FILE"


class RemoteError(IncisiveError):
    exit_code = ExitCode.INVALID


def verify_setting() -> Any:
    """What httpx verifies the platform's certificate with: only ``$INCISIVE_CA_FILE`` when set, else the system
    store. Every CLI call to the platform uses this (the activation call has no token, so no ApiClient)."""
    ca_file = os.environ.get(CA_FILE_ENV, "")
    return tls.client_context(Path(ca_file)) if ca_file else True


class ApiClient:
    def __init__(self, url: str, token: str, timeout_s: float = 60.0, peer: str = "platform",
                 token_env: str = "INCISIVE_TOKEN") -> None:  # noqa: S107 (the variable's name, not a token)
        if not token:
            raise InputError(f"give --token or set {token_env}")
        self.url, self.token, self.timeout_s, self.peer = url.rstrip("/"), token, timeout_s, peer
        self.verify = verify_setting()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON of the answer; :class:`RemoteError` naming the status and the platform's ``detail``."""
        try:
            response = httpx.request(method, self.url + path, timeout=self.timeout_s, verify=self.verify,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              **kwargs.pop("headers", {})}, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach the {self.peer}: {tls.transport_reason(exc)}") from None
        if response.status_code >= 300:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:200]
            raise RemoteError(f"{self.peer} answered {response.status_code}: {detail}")
        return response.json()

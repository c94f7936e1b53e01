"""HTTP to a Central Node tenant: STOW-RS batches and clinical rows, retried while the connection fails.

The contract (what :mod:`incisive.node.api.stow` and the Central Node's ``/tenant/v1`` routes answer):
* ``POST {url}/dicom-web/studies``, ``multipart/related; type="application/dicom"``, ``Authorization: Bearer T``.
  200/202/409 with a DICOM JSON body: the Referenced SOP Sequence (0008,1199) lists acknowledged instances by
  SOP Instance UID, with Warning Reason (0008,1196) when the Central Node quarantined one and the private
  (0009,1001) = ``DUPLICATE`` when it had it already; the Failed SOP Sequence (0008,1198) lists refused ones with
  a Failure Reason (A900: another instance with that UID). 400 ``part N rejected: REASON[ (and K more)]; nothing
  stored`` when an instance did not pass the door: that part is refused with the reason, the others are sent again.
  413: the batch is split (an instance alone is refused).
* ``POST {url}/tenant/v1/clinical``, JSON ``{"rows": [{column: value}, …]}`` (``patient_id`` = pseudonym, dates
  shifted), answered ``{"stored": n, "duplicates": n}``. 413: the rows are split.
* 401/403 and any other answer stop the run with the status and the server's ``detail`` (PHI-free by design).
  Connection failures, 429, 502, 503 and 504 are retried with exponential back-off (``Retry-After`` honoured) for
  ``retry_for_s``; then :class:`ConnectionLost`: what was acknowledged is in the journal, a rerun resumes.

The token is only ever put in the Authorization header: never logged, never in an error.
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from incisive.common import tls
from incisive.common.errors import ConfigError, IncisiveError
from incisive.common.exit_codes import ExitCode
from incisive.common.logging import get_logger

log = get_logger("upload.client")
STOW_PATH = "/dicom-web/studies"
CLINICAL_PATH = "/tenant/v1/clinical"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
CONFLICT = "another instance with this SOP Instance UID is stored at the Central Node"
_REJECTED = re.compile(r"^part (\d+) rejected: (.*?)(?: \(and (\d+) more\))?; nothing stored$", re.DOTALL)
CLINICAL_CHUNK_BYTES = 1 << 20  # well below the Central Node's bound (16 MiB); a 413 splits a chunk further
CLINICAL_CHUNK_ROWS = 1000


class RemoteRefused(IncisiveError):
    """The Central Node refused the request (token, role, request): retrying would not help."""

    exit_code = ExitCode.INVALID


class ConnectionLost(IncisiveError):
    """The Central Node could not be reached for ``retry_for_s``; the journal keeps what was acknowledged."""

    exit_code = ExitCode.PROBLEMS


@dataclass(frozen=True)
class Answer:
    """What the Central Node said about one instance: sent | duplicate | held | refused | unknown."""

    status: str
    reason: str = ""


def check_url(url: str) -> str:
    """The base URL without a trailing slash; https unless the Central Node is on this machine."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("--to must be the Central Node's URL, e.g. https://central.example")
    if parts.scheme != "https" and not tls.is_loopback_host(parts.hostname):
        raise ConfigError(f"the Central Node URL must be https:// (plain http:// only to this machine, "
                          f"not {parts.hostname})")
    return url


def _transport_reason(exc: BaseException) -> tuple[str, bool]:
    """A one-line reason and whether it is a TLS trust problem (not worth retrying)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"the Central Node's TLS certificate is not trusted ({seen.verify_message})", True
        seen = seen.__cause__ or seen.__context__
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return "the Central Node's TLS certificate is not trusted", True
    return type(exc).__name__, False


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        detail = body.get("detail") if isinstance(body, dict) else None
    except ValueError:
        detail = None
    return str(detail if detail is not None else response.text[:200]).strip()


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    """A STOW-RS body of ``parts`` and its Content-Type (a random boundary that none of the parts contains)."""
    boundary = secrets.token_hex(16)
    while any(boundary.encode() in part for part in parts):  # pragma: no cover - 128 random bits
        boundary = secrets.token_hex(16)
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    pieces: list[bytes] = []
    for part in parts:
        pieces += [head, part, b"\r\n"]
    pieces.append(f"--{boundary}--\r\n".encode())
    return b"".join(pieces), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _first(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def parse_stow(body: Any, uids: list[str]) -> list[Answer]:
    """Each instance's answer, in the order of ``uids`` (their de-identified SOP Instance UIDs)."""
    by_uid: dict[str, Answer] = {}
    body = body if isinstance(body, dict) else {}
    for item in body.get("00081199", {}).get("Value") or []:
        uid = str(_first(item, "00081155") or "")
        if _first(item, "00090010") == "INCISIVE" and _first(item, "00091001") == "DUPLICATE":
            by_uid[uid] = Answer("duplicate")
        elif _first(item, "00081196") is not None:
            by_uid[uid] = Answer("held", "quarantined at the Central Node")
        else:
            by_uid[uid] = Answer("sent")
    for item in body.get("00081198", {}).get("Value") or []:
        uid = str(_first(item, "00081155") or "")
        code = _first(item, "00081197")
        reason = CONFLICT if code == 0xA900 else f"refused by the Central Node (failure reason {code})"
        by_uid[uid] = Answer("refused", reason)
    return [by_uid.get(uid, Answer("unknown")) for uid in uids]


class CentralClient:
    def __init__(self, url: str, token: str, ca_file: Path | None = None, retry_for_s: float = 300.0,
                 timeout_s: float = 600.0) -> None:
        if not token:
            raise ConfigError("give --token or set INCISIVE_UPLOAD_TOKEN")
        self.url = check_url(url)
        self.retry_for_s = retry_for_s
        self.retries = 0
        verify: ssl.SSLContext | bool = tls.client_context(ca_file) if ca_file else True
        self._http = httpx.Client(verify=verify, timeout=httpx.Timeout(timeout_s, connect=15.0),
                                  headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, content: bytes, content_type: str) -> httpx.Response:
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.5
        while True:
            try:
                response = self._http.post(self.url + path, content=content, headers={"Content-Type": content_type})
            except httpx.TransportError as exc:
                reason, fatal = _transport_reason(exc)
                if fatal:
                    raise RemoteRefused(reason) from None
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                reason = f"HTTP {response.status_code}"
                wait = response.headers.get("retry-after", "")
                delay = max(delay, float(wait)) if wait.isdigit() else delay
            if time.monotonic() + delay > deadline:
                raise ConnectionLost(f"the Central Node could not be reached ({reason}) for {self.retry_for_s:g} s; "
                                     "what it acknowledged is in the journal: run the same command again to resume")
            log.warning("upload request failed (%s); retrying in %.1f s", reason, delay)
            self.retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _refused(self, response: httpx.Response) -> RemoteRefused:
        status = response.status_code
        if status == 401:
            return RemoteRefused("the Central Node refused the token (401): check --token")
        if status == 403:
            return RemoteRefused(f"the token may not do this (403: {_detail(response)})")
        return RemoteRefused(f"the Central Node answered {status}: {_detail(response)}")

    def stow(self, parts: list[bytes], uids: list[str]) -> list[Answer]:
        """Send instances (de-identified Part 10 bytes) and return each one's answer, in order."""
        if not parts:
            return []
        body, content_type = multipart(parts)
        response = self._post(STOW_PATH, body, content_type)
        del body
        status = response.status_code
        if status in (200, 202, 409):
            return parse_stow(response.json(), uids)
        if status == 413:
            if len(parts) == 1:
                return [Answer("refused", "larger than the Central Node accepts in one request")]
            half = len(parts) // 2
            return self.stow(parts[:half], uids[:half]) + self.stow(parts[half:], uids[half:])
        rejected = _REJECTED.match(_detail(response)) if status == 400 else None
        if rejected is None or not 1 <= int(rejected.group(1)) <= len(parts):
            raise self._refused(response)
        bad, reason, more = int(rejected.group(1)) - 1, rejected.group(2), int(rejected.group(3) or 0)
        answers: list[Answer | None] = [None] * len(parts)
        answers[bad] = Answer("refused", reason)
        rest = [i for i in range(len(parts)) if i != bad]
        groups = [rest] if not more or len(rest) < 2 else [rest[:len(rest) // 2], rest[len(rest) // 2:]]
        for group in groups:
            for i, answer in zip(group, self.stow([parts[i] for i in group], [uids[i] for i in group]), strict=True):
                answers[i] = answer
        return [a if a is not None else Answer("unknown") for a in answers]

    def clinical(self, rows: list[dict[str, str]]) -> dict[str, int]:
        """Post pseudonymised rows in chunks; the summed ``{"stored": n, "duplicates": n}``."""
        total = {"stored": 0, "duplicates": 0}
        for chunk in _chunks(rows, lambda row: len(json.dumps(row)) + 2):
            for key, value in self._clinical(chunk).items():
                total[key] += value
        return total

    def _clinical(self, rows: list[dict[str, str]]) -> dict[str, int]:
        response = self._post(CLINICAL_PATH, json.dumps({"rows": rows}).encode(), "application/json")
        if response.status_code == 413 and len(rows) > 1:
            first, second = self._clinical(rows[:len(rows) // 2]), self._clinical(rows[len(rows) // 2:])
            return {k: first[k] + second[k] for k in first}
        if response.status_code != 200:
            raise self._refused(response)
        answer = response.json()
        try:
            return {"stored": int(answer["stored"]), "duplicates": int(answer["duplicates"])}
        except (KeyError, TypeError, ValueError):
            raise RemoteRefused("the Central Node's answer to the clinical rows is not {stored, duplicates}") from None


def _chunks(rows: list[dict[str, str]], size: Callable[[dict[str, str]], int]) -> list[list[dict[str, str]]]:
    chunks: list[list[dict[str, str]]] = []
    current: list[dict[str, str]] = []
    used = 0
    for row in rows:
        n = size(row)
        if current and (used + n > CLINICAL_CHUNK_BYTES or len(current) >= CLINICAL_CHUNK_ROWS):
            chunks.append(current)
            current, used = [], 0
        current.append(row)
        used += n
    if current:
        chunks.append(current)
    return chunks

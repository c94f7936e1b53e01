"""STOW-RS (PS3.18 10.5): parse a multipart/related body, de-identify every part, store all-or-nothing.

A body whose boundary does not match its Content-Type, a part that is not ``application/dicom``, or a part
that cannot be read or de-identified fails the whole request (HTTP 400/415, nothing stored) with a message
naming the part. Otherwise every instance is stored and committed in one transaction before the 200.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from incisive.common.logging import get_logger
from incisive.node.home import Node
from incisive.node.net.receive import Receiver

log = get_logger("api.stow")
_PARAM = re.compile(r';\s*([A-Za-z0-9_-]+)\s*=\s*("([^"]*)"|[^;\s]+)')


class StowError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class StowResult:
    status: int
    body: dict[str, Any]


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """``'multipart/related; type="application/dicom"; boundary=x'`` → (type, {param: value})."""
    main = header.split(";", 1)[0].strip().lower()
    params = {m.group(1).lower(): m.group(3) if m.group(3) is not None else m.group(2)
              for m in _PARAM.finditer(header)}
    return main, params


def split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """RFC 2046 parts as (lower-cased headers, content); :class:`StowError` when the body does not parse."""
    delim = b"--" + boundary.encode("latin-1")
    if not body.startswith(delim):
        start = body.find(b"\r\n" + delim)
        if start < 0:
            raise StowError(400, "the body does not contain the boundary given in Content-Type")
        body = body[start + 2:]
    chunks = body.split(b"\r\n" + delim)
    first = chunks[0][len(delim):]
    chunks[0] = first
    parts: list[tuple[dict[str, str], bytes]] = []
    closed = False
    for chunk in chunks:
        if chunk.startswith(b"--"):
            closed = True
            break
        if not chunk.startswith(b"\r\n"):
            raise StowError(400, "malformed multipart body: a boundary is not followed by CRLF")
        head, sep, content = chunk[2:].partition(b"\r\n\r\n")
        if not sep:
            if chunk[2:].startswith(b"\r\n"):  # part without headers
                head, content = b"", chunk[4:]
            else:
                raise StowError(400, f"malformed multipart body: part {len(parts) + 1} has no header end")
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    if not closed:
        raise StowError(400, "malformed multipart body: no closing boundary (truncated upload?)")
    if not parts:
        raise StowError(400, "the multipart body has no parts")
    return parts


def _instances(content_type: str, body: bytes) -> list[bytes]:
    main, params = media_type(content_type)
    if main != "multipart/related":
        raise StowError(415, "STOW-RS needs Content-Type multipart/related; type=\"application/dicom\"")
    declared = params.get("type", "application/dicom").lower()
    if declared != "application/dicom":
        raise StowError(415, f"only type=\"application/dicom\" is supported, not \"{declared[:40]}\"")
    boundary = params.get("boundary")
    if not boundary or len(boundary) > 200:
        raise StowError(400, "Content-Type has no valid boundary parameter")
    out = []
    for i, (headers, content) in enumerate(split_multipart(body, boundary), 1):
        part_type = media_type(headers.get("content-type", declared))[0]
        if part_type != "application/dicom":
            raise StowError(415, f"part {i} is {part_type[:40]!r}, expected 'application/dicom'; nothing stored")
        out.append(content)
    return out


def _store(node: Node, datasets: list[bytes], base_url: str) -> StowResult:
    receiver = Receiver(node, "stow")
    outcomes = [receiver.deidentify(raw) for raw in datasets]
    bad = [(i, o.reason) for i, o in enumerate(outcomes, 1) if o.status == "rejected"]
    if bad:
        i, reason = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise StowError(400, f"part {i} rejected: {reason}{more}; nothing stored")
    results = receiver.record_many(outcomes)
    receiver.finish()
    if any(r.result == "error" for r in results):
        raise StowError(503, "storage unavailable; nothing acknowledged, retry later")
    refs: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    warning = False
    for o, r in zip(outcomes, results, strict=True):
        item: dict[str, Any] = {"00081150": {"vr": "UI", "Value": [o.facts["sop_class_uid"]]},
                                "00081155": {"vr": "UI", "Value": [r.sop_uid]}}
        if r.result == "conflict":
            failed.append({**item, "00081197": {"vr": "US", "Value": [0xA900]}})
            continue
        if r.result == "quarantined":
            item["00081196"] = {"vr": "US", "Value": [0xB000]}
            warning = True
        else:
            url = f"{base_url}/studies/{o.facts['study_uid']}/series/{o.facts['series_uid']}/instances/{r.sop_uid}"
            item["00081190"] = {"vr": "UR", "Value": [url]}
        refs.append(item)
    body: dict[str, Any] = {"00081199": {"vr": "SQ", "Value": refs}}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 409 if failed and not refs else 202 if failed or warning else 200
    log.info("STOW-RS: %d instances, %s", len(datasets), dict(receiver.counts))
    return StowResult(status, body)


async def stow(node: Node, content_type: str, body: bytes, base_url: str) -> StowResult:
    datasets = _instances(content_type, body)
    return await run_in_threadpool(_store, node, datasets, base_url)

"""STOW-RS (PS3.18 10.5): parse a multipart/related body, de-identify every part, store all-or-nothing.

A body whose boundary does not match its Content-Type, a part that is not ``application/dicom``, or a part
that cannot be read or de-identified fails the whole request (HTTP 400/415, nothing stored) with a message
naming the part. Otherwise every instance is stored and committed in one transaction before the 200.

The body is parsed as it streams in (:class:`MultipartSpool`): a part larger than ``spool_threshold_bytes`` is
spooled to an unnamed temporary file under ``<node>/tmp`` (0700), so a request never holds its whole body in
memory; its size is capped by ``stow_max_bytes`` (413, :mod:`incisive.common.asgi_limits`).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from starlette.concurrency import run_in_threadpool

from incisive.common.logging import get_logger
from incisive.node.home import Node
from incisive.node.net.receive import Receiver

log = get_logger("api.stow")
_PARAM = re.compile(r';\s*([A-Za-z0-9_-]+)\s*=\s*("([^"]*)"|[^;\s]+)')
# an instance that was already stored (same SOP Instance UID, same bytes) is acknowledged like a new one, and says so
# in a private attribute of its Referenced SOP Sequence item (creator INCISIVE, (0009,1001) = DUPLICATE), which
# DICOMweb clients ignore and the provider's uploader (node/upload) counts
DUPLICATE = {"00090010": {"vr": "LO", "Value": ["INCISIVE"]}, "00091001": {"vr": "CS", "Value": ["DUPLICATE"]}}


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


class Part:
    """One body part: its lower-cased headers and its content, in memory up to the spool threshold, then on disk
    (an unnamed temporary file in the node's ``tmp/``, gone when closed)."""

    def __init__(self, headers: dict[str, str], threshold: int, spool_dir: Path) -> None:
        self.headers = headers
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=threshold, mode="w+b",  # noqa: SIM115
                                                             dir=str(spool_dir))
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.file.write(data)
        self.size += len(data)

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    def close(self) -> None:
        self.file.close()


class MultipartSpool:
    """An incremental RFC 2046 parser: :meth:`feed` body chunks as they arrive, :meth:`close` for the parts.

    Only a window of about one chunk is held; part contents go to :class:`Part` (spooled to disk above the
    threshold), so the memory a request needs does not grow with its body. :class:`StowError` (400) when the body
    does not parse; the parts made so far are closed.
    """

    MAX_HEAD = 16 * 1024

    def __init__(self, boundary: str, threshold: int, spool_dir: Path) -> None:
        self.delim = b"\r\n--" + boundary.encode("latin-1")
        self.threshold, self.spool_dir = threshold, spool_dir
        self.buf = bytearray(b"\r\n")  # so that a body starting with the delimiter needs no special case
        self.state = "preamble"
        self.parts: list[Part] = []
        self.closed = False

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        try:
            self._parse()
        except StowError:
            self.discard()
            raise

    def _parse(self) -> None:
        buf, delim = self.buf, self.delim
        while True:
            if self.state == "preamble":
                i = buf.find(delim)
                if i < 0:
                    del buf[:max(0, len(buf) - len(delim))]
                    return
                del buf[:i + len(delim)]
                self.state = "delimiter"
            elif self.state == "delimiter":
                if len(buf) < 2:
                    return
                if buf[:2] == b"--":
                    self.closed, self.state = True, "epilogue"
                elif buf[:2] == b"\r\n":
                    del buf[:2]
                    self.state = "head"
                else:
                    raise StowError(400, "malformed multipart body: a boundary is not followed by CRLF")
            elif self.state == "head":
                if buf[:2] == b"\r\n":  # part without headers
                    head, skip = b"", 2
                else:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > self.MAX_HEAD:
                            raise StowError(400, f"malformed multipart body: part {len(self.parts) + 1} has no "
                                                 "header end")
                        return
                    head, skip = bytes(buf[:end]), end + 4
                del buf[:skip]
                self.parts.append(Part(_headers(head), self.threshold, self.spool_dir))
                self.state = "body"
            elif self.state == "body":
                i = buf.find(delim)
                part = self.parts[-1]
                if i < 0:
                    keep = len(delim) - 1
                    if len(buf) > keep:
                        part.write(memoryview(buf)[:len(buf) - keep])
                        del buf[:len(buf) - keep]
                    return
                part.write(memoryview(buf)[:i])
                del buf[:i + len(delim)]
                self.state = "delimiter"
            else:  # epilogue: ignored
                buf.clear()
                return

    def close(self) -> list[Part]:
        """The parts of a complete body; :class:`StowError` when it was not one."""
        if self.state == "preamble":
            self.discard()
            raise StowError(400, "the body does not contain the boundary given in Content-Type")
        if self.state == "head":
            n = len(self.parts) + 1
            self.discard()
            raise StowError(400, f"malformed multipart body: part {n} has no header end")
        if not self.closed:
            self.discard()
            raise StowError(400, "malformed multipart body: no closing boundary (truncated upload?)")
        if not self.parts:
            raise StowError(400, "the multipart body has no parts")
        return self.parts

    def discard(self) -> None:
        for part in self.parts:
            part.close()
        self.parts = []


def _headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n"):
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


def spool(content_type: str, threshold: int, spool_dir: Path) -> MultipartSpool:
    """Check the request's media type and make the parser for its body (415/400 as :class:`StowError`)."""
    main, params = media_type(content_type)
    if main != "multipart/related":
        raise StowError(415, "STOW-RS needs Content-Type multipart/related; type=\"application/dicom\"")
    declared = params.get("type", "application/dicom").lower()
    if declared != "application/dicom":
        raise StowError(415, f"only type=\"application/dicom\" is supported, not \"{declared[:40]}\"")
    boundary = params.get("boundary")
    if not boundary or len(boundary) > 200:
        raise StowError(400, "Content-Type has no valid boundary parameter")
    spool_dir.mkdir(mode=0o700, exist_ok=True)
    return MultipartSpool(boundary, threshold, spool_dir)


def check_parts(parts: list[Part]) -> None:
    for i, part in enumerate(parts, 1):
        part_type = media_type(part.headers.get("content-type", "application/dicom"))[0]
        if part_type != "application/dicom":
            raise StowError(415, f"part {i} is {part_type[:40]!r}, expected 'application/dicom'; nothing stored")


def _store(node: Node, parts: list[Part], base_url: str) -> StowResult:
    receiver = Receiver(node, "stow")
    outcomes = []
    for part in parts:  # one part in memory at a time (plus the de-identified results)
        outcomes.append(receiver.deidentify(part.read()))
        part.close()
    bad = [(i, o.reason) for i, o in enumerate(outcomes, 1) if o.status == "rejected"]
    if bad:
        i, reason = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise StowError(400, f"part {i} rejected: {reason}{more}; nothing stored")
    results = receiver.record_many(outcomes)
    receiver.finish()
    quota = next((r.reason for r in results if r.result == "error" and r.reason.startswith("quota exceeded")), None)
    if quota is not None:  # a Central Node tenant at its limit (node/quota.py): nothing of the request was stored
        raise StowError(507, f"{quota}; nothing stored")
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
            if r.result == "duplicate":
                item.update(DUPLICATE)
        refs.append(item)
    body: dict[str, Any] = {"00081199": {"vr": "SQ", "Value": refs}}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 409 if failed and not refs else 202 if failed or warning else 200
    log.info("STOW-RS: %d instances, %s", len(parts), dict(receiver.counts))
    return StowResult(status, body)


async def stow(node: Node, content_type: str, chunks: AsyncIterator[bytes], base_url: str) -> StowResult:
    """Parse the body as it arrives (parts above ``spool_threshold_bytes`` go to ``<node>/tmp``), then store."""
    parser = spool(content_type, node.settings.spool_threshold_bytes, node.home / "tmp")
    try:
        async for chunk in chunks:
            if chunk:
                parser.feed(chunk)
        parts = parser.close()
        check_parts(parts)
        return await run_in_threadpool(_store, node, parts, base_url)
    finally:
        parser.discard()

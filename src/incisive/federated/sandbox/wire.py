"""The sandbox wire protocol: one frame per request and per reply, over a pipe pair, never pickle.

A frame is ``b"ISB1"``, the header length (4 bytes, big-endian), the body length (8 bytes, big-endian), a UTF-8
JSON header, then the body: an uncompressed ``.npz`` archive of numeric arrays (empty when there are none).

* request (trusted → child): ``{"op": str, "args": {...}}``
* reply (child → trusted): ``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "<exception type>"}``;
  the very first frame the child writes is its hello (``{"ok": true, "hello": {...}}`` once ``task.py`` is
  imported, or ``{"ok": false, "error": ...}`` when importing it failed).

The trusted side reads a reply with :func:`read_frame` under limits: a header over :data:`MAX_HEADER` or a body
over the job's ``max_output_mb`` is refused before it is read, and :func:`decode_arrays` parses every ``.npy``
member itself (numeric dtypes only, declared size checked against the member's size) instead of trusting the
archive, so a hostile child can make the job fail but cannot make the node allocate or unpickle anything.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from incisive.common.errors import IncisiveError

MAGIC = b"ISB1"
PREFIX = struct.Struct(">4sIQ")
MAX_HEADER = 1 << 20  # 1 MiB of JSON: results are small dicts; arrays go in the body
NUMERIC_KINDS = frozenset("biufc")


class SandboxError(IncisiveError):
    """A sandboxed job failed; the message says why and never holds PHI or bundle-chosen text."""


class OutputRejected(SandboxError):
    """The sandbox answered something other than what was declared (``output rejected: <reason>``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"output rejected: {reason}")
        self.reason = reason


class ChildGone(Exception):
    """The pipe closed: the child exited or was killed (the runner turns this into a SandboxError)."""


def encode_arrays(arrays: Mapping[str, np.ndarray] | None) -> bytes:
    if not arrays:
        return b""
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def decode_arrays(body: bytes, limit: int) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` body, checked member by member; OutputRejected on anything unexpected."""
    if not body:
        return {}
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise OutputRejected("arrays are not a valid .npz archive") from None
    if sum(m.file_size for m in members) > limit:
        raise OutputRejected(f"arrays exceed the output limit of {limit >> 20} MB")
    out: dict[str, np.ndarray] = {}
    for member in members:
        name = member.filename[:-4] if member.filename.endswith(".npy") else member.filename
        if name in out or not name:
            raise OutputRejected("arrays are not a valid .npz archive")
        try:
            with archive.open(member) as f:
                out[name] = _read_npy(f, member.file_size)
        except OutputRejected:
            raise
        except Exception:  # any parse problem of untrusted bytes is a malformed reply, never a crash
            raise OutputRejected("arrays are not a valid .npz archive") from None
    return out


def _read_npy(f: Any, size: int) -> np.ndarray:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise OutputRejected("arrays are not a valid .npz archive")
    if dtype.hasobject or dtype.kind not in NUMERIC_KINDS or dtype.fields is not None:
        raise OutputRejected(f"an array has the non-numeric dtype {dtype.kind!r}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > size:
        raise OutputRejected("arrays are not a valid .npz archive")
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise OutputRejected("arrays are not a valid .npz archive")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return array.copy()


def pack_frame(header: dict[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """The bytes of one frame (TypeError/ValueError when the header is not JSON or an array cannot be saved)."""
    body = encode_arrays(arrays)
    head = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    return PREFIX.pack(MAGIC, len(head), len(body)) + head + body


def write_frame(fd: int, header: dict[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> None:
    _write_all(fd, pack_frame(header, arrays))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_exact(fd: int, n: int, wait: Any = None) -> bytes:
    """``n`` bytes from ``fd``; ``wait()`` is called before each read (the runner's deadline check)."""
    chunks: list[bytes] = []
    left = n
    while left:
        if wait is not None:
            wait()
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise ChildGone
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, body_limit: int, wait: Any = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One frame; OutputRejected when it is oversized or malformed (checked before the body is read)."""
    magic, head_len, body_len = PREFIX.unpack(read_exact(fd, PREFIX.size, wait))
    if magic != MAGIC:
        raise OutputRejected("malformed reply (bad frame)")
    if head_len > MAX_HEADER:
        raise OutputRejected(f"reply header of {head_len >> 10} KiB exceeds {MAX_HEADER >> 10} KiB")
    if body_len > body_limit:
        raise OutputRejected(f"reply of {body_len >> 20} MB exceeds the output limit of {body_limit >> 20} MB")
    try:
        header = json.loads(read_exact(fd, head_len, wait))
    except (ValueError, RecursionError):
        raise OutputRejected("malformed reply (header is not JSON)") from None
    if not isinstance(header, dict):
        raise OutputRejected("malformed reply (header is not an object)")
    body = read_exact(fd, body_len, wait) if body_len else b""
    return header, decode_arrays(body, body_limit)

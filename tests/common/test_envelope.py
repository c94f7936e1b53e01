"""Sealed objects: round trips at the chunk edges, determinism, and every kind of tamper fails."""

from __future__ import annotations

import hashlib
import io
import os
import struct

import pytest

from incisive.common.envelope import (
    CHUNK,
    HEADER_BYTES,
    TAG_BYTES,
    EnvelopeError,
    envelope_key_id,
    open_chunks,
    open_envelope,
    seal,
    sealed_size,
)
from incisive.common.errors import IntegrityError

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
KID = "k0000001"
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5]
STEP = CHUNK + TAG_BYTES


def key_for(key_id: str) -> bytes:
    return {KID: KEY, "k0000002": OTHER}[key_id]


@pytest.fixture(scope="module")
def big() -> bytes:
    return os.urandom(3 * CHUNK + 5)


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(size: int, big: bytes) -> None:
    data = big[:size]
    blob = seal(data, KEY, KID)
    assert len(blob) == sealed_size(size)
    assert open_envelope(blob, key_for) == data
    assert b"".join(open_chunks(io.BytesIO(blob).read, key_for)) == data
    assert envelope_key_id(blob[:HEADER_BYTES]) == KID


def test_deterministic_and_key_dependent(big: bytes) -> None:
    data = big[: CHUNK + 7]
    assert seal(data, KEY, KID) == seal(data, KEY, KID)
    assert seal(data, KEY, KID, digest=hashlib.sha256(data).digest()) == seal(data, KEY, KID)
    other = seal(data, OTHER, KID)
    assert hashlib.sha256(other).digest() != hashlib.sha256(seal(data, KEY, KID)).digest()
    assert seal(data + b"x", KEY, KID)[:HEADER_BYTES] != seal(data, KEY, KID)[:HEADER_BYTES]  # salt differs
    assert data[:64] not in seal(data, KEY, KID)


def _fails(blob: bytes) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(blob, key_for)
    with pytest.raises(EnvelopeError):
        for _ in open_chunks(io.BytesIO(blob).read, key_for):
            pass


@pytest.mark.parametrize("where", [0, 4, 5, 12, 13, 44, 45, 48, HEADER_BYTES, HEADER_BYTES + CHUNK,
                                   HEADER_BYTES + STEP - 1, HEADER_BYTES + STEP, -TAG_BYTES, -1])
def test_one_byte_changed_anywhere_fails(where: int, big: bytes) -> None:
    blob = bytearray(seal(big[: 2 * CHUNK + 3], KEY, KID))
    blob[where] ^= 0x01
    _fails(bytes(blob))


def test_chunk_swap_drop_truncate_append_fail(big: bytes) -> None:
    blob = seal(big, KEY, KID)  # 4 chunks: 3 full + 5 bytes
    head, body = blob[:HEADER_BYTES], blob[HEADER_BYTES:]
    chunks = [body[i:i + STEP] for i in range(0, len(body), STEP)]
    assert len(chunks) == 4
    _fails(head + chunks[1] + chunks[0] + chunks[2] + chunks[3])  # reordered
    _fails(head + chunks[0] + chunks[2] + chunks[3])  # dropped
    _fails(head + b"".join(chunks[:3]))  # truncated at a chunk boundary
    _fails(head + b"".join(chunks)[:-1])  # truncated inside the last chunk
    _fails(head + b"".join(chunks[:3]) + chunks[3] + chunks[3])  # appended
    _fails(head)  # no chunk at all
    _fails(head + b"\x00" * (TAG_BYTES - 1))
    one = seal(big[:CHUNK], KEY, KID)  # exactly one chunk: appending a copy of it fails
    _fails(one + one[HEADER_BYTES:])


def test_chunk_from_another_object_fails(big: bytes) -> None:
    a, b = seal(big[: 2 * CHUNK], KEY, KID), seal(big[1 : 2 * CHUNK + 1], KEY, KID)
    _fails(a[: HEADER_BYTES + STEP] + b[HEADER_BYTES + STEP:])


def test_wrong_or_unknown_key_and_header_changes_fail(big: bytes) -> None:
    blob = seal(big[:1000], KEY, KID)
    with pytest.raises(EnvelopeError):
        open_envelope(blob, lambda _: OTHER)
    with pytest.raises(EnvelopeError, match="unknown key id"):
        open_envelope(seal(b"x", KEY, "zzzzzzzz"), key_for)
    renamed = blob[:5] + b"k0000002" + blob[13:]  # another key id of the ring
    _fails(renamed)
    rechunked = blob[:45] + struct.pack(">I", CHUNK // 2) + blob[HEADER_BYTES:]
    _fails(rechunked)
    _fails(b"XXXX" + blob[4:])
    _fails(blob[:4] + b"\x02" + blob[5:])
    _fails(blob[:45] + struct.pack(">I", 1 << 30) + blob[HEADER_BYTES:])
    assert issubclass(EnvelopeError, IntegrityError)


def test_wrong_digest_makes_an_unopenable_object() -> None:
    blob = seal(b"data", KEY, KID, digest=hashlib.sha256(b"other").digest())
    with pytest.raises(EnvelopeError, match="content hash"):
        open_envelope(blob, key_for)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        seal(b"x", KEY[:16], KID)
    with pytest.raises(ValueError):
        seal(b"x", KEY, "short")
    with pytest.raises(ValueError):
        seal(b"x", KEY, KID, digest=b"\x00" * 31)
    with pytest.raises(EnvelopeError):
        envelope_key_id(b"INCE")

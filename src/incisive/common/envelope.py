"""Sealed objects: chunked AES-256-GCM, deterministic per (data key, plaintext), so a store stays idempotent.

Format (version 1)::

    header  b"INCE" | version u8 = 1 | key id (8 ASCII bytes) | salt (32) | chunk size u32     (49 bytes)
    chunks  AESGCM(k_obj).encrypt(nonce = index u64 ‖ final u32, chunk, aad = header)       (chunk + 16 each)

    salt  = HMAC-SHA256(k_salt, sha256(plaintext))
    k_obj = HKDF-SHA256(data key, salt=salt, info="incisive object v1")
    k_salt = HKDF-SHA256(data key, info="incisive salt v1")

Every chunk holds :data:`CHUNK` plaintext bytes but the last (empty plaintext: one empty final chunk). The nonce
binds a chunk to its index and to whether it is the last one (the STREAM construction): dropping, reordering,
truncating at a chunk boundary or appending a chunk makes a tag fail. The header is the associated data of every
chunk, so a changed key id, salt or chunk size fails too. Each object has its own key (k_obj from its salt), so
the fixed nonce sequence never repeats under one key; the same plaintext under the same data key gives the same
bytes (a second ``put`` of an instance stores nothing new), and under another tenant's key other bytes (no
equality leaks across tenants through the store's address, the sha256 of the sealed bytes). Opening checks every
tag and then the salt against the plaintext's hash (the content hash).

Only the owner of the data key can link two objects of equal plaintext; an object's size is visible (plaintext
length + 49 + 16 per MiB).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Iterator
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from incisive.common.errors import IntegrityError

__all__ = ["CHUNK", "HEADER_BYTES", "TAG_BYTES", "EnvelopeError", "content_matches", "envelope_key_id", "is_envelope",
           "open_chunks", "open_envelope", "seal", "sealed_size"]

CHUNK = 1 << 20
MAGIC = b"INCE"
VERSION = 1
KEY_ID_BYTES = 8
SALT_BYTES = 32
TAG_BYTES = 16
KEY_BYTES = 32
_HEAD = struct.Struct(">4sB8s32sI")
HEADER_BYTES = _HEAD.size
_NONCE = struct.Struct(">QI")
_MAX_CHUNK = 1 << 26  # a header asking for more is refused before any allocation


class EnvelopeError(IntegrityError):
    """A sealed object does not open: wrong tag, truncated, reordered/dropped chunk, unknown key id, not sealed."""


KeyFor = Callable[[str], bytes]


@lru_cache(maxsize=64)
def _salt_key(data_key: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=b"incisive salt v1").derive(data_key)


def _object_aead(data_key: bytes, salt: bytes) -> AESGCM:
    return AESGCM(HKDF(hashes.SHA256(), KEY_BYTES, salt=salt, info=b"incisive object v1").derive(data_key))


def _salt(data_key: bytes, plain_digest: bytes) -> bytes:
    return hmac.new(_salt_key(data_key), plain_digest, hashlib.sha256).digest()


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError("a data key must be 32 bytes")


def _key_id_bytes(key_id: str) -> bytes:
    raw = key_id.encode("ascii", "replace")
    if len(raw) != KEY_ID_BYTES or not key_id.isascii() or not key_id.isprintable():
        raise ValueError(f"a key id must be {KEY_ID_BYTES} printable ASCII characters")
    return raw


def sealed_size(plain_size: int, chunk: int = CHUNK) -> int:
    """Bytes of the sealed form of ``plain_size`` plaintext bytes."""
    chunks = max(1, -(-plain_size // chunk))
    return HEADER_BYTES + plain_size + chunks * TAG_BYTES


def seal(data: bytes, key: bytes, key_id: str, *, digest: bytes | None = None) -> bytes:
    """Seal ``data`` under the data key ``key`` (named ``key_id`` in the header).

    ``digest``: sha256 of ``data`` when the caller already has it (the ingest workers hash every instance), so it
    is not computed twice; it must be right, or the object does not open (its content hash fails).
    """
    _check_key(key)
    kid = _key_id_bytes(key_id)
    plain_digest = digest if digest is not None else hashlib.sha256(data).digest()
    if len(plain_digest) != 32:
        raise ValueError("digest must be the 32-byte sha256 of data")
    salt = _salt(key, plain_digest)
    header = _HEAD.pack(MAGIC, VERSION, kid, salt, CHUNK)
    aead = _object_aead(key, salt)
    size = len(data)
    last = max(0, -(-size // CHUNK) - 1)
    out = bytearray(sealed_size(size))
    out[:HEADER_BYTES] = header
    src, dst = memoryview(data), memoryview(out)
    step = CHUNK + TAG_BYTES
    for index in range(last + 1):
        piece = src[index * CHUNK:(index + 1) * CHUNK]
        at = HEADER_BYTES + index * step
        aead.encrypt_into(_NONCE.pack(index, index == last), piece, header, dst[at:at + len(piece) + TAG_BYTES])
    return bytes(out)


def _parse_header(head: bytes) -> tuple[str, bytes, int]:
    if len(head) < HEADER_BYTES:
        raise EnvelopeError("not a sealed object (too short)")
    magic, version, kid, salt, chunk = _HEAD.unpack_from(head)
    if magic != MAGIC:
        raise EnvelopeError("not a sealed object (no INCE header)")
    if version != VERSION:
        raise EnvelopeError(f"sealed object of unknown version {version}")
    if not 0 < chunk <= _MAX_CHUNK:
        raise EnvelopeError("sealed object with an invalid chunk size")
    try:
        key_id = kid.decode("ascii")
    except UnicodeDecodeError:
        raise EnvelopeError("sealed object with an invalid key id") from None
    return key_id, salt, chunk


def is_envelope(head: bytes) -> bool:
    return head[:4] == MAGIC


def envelope_key_id(head: bytes) -> str:
    """The key id a sealed object names (``head``: at least its first :data:`HEADER_BYTES` bytes)."""
    return _parse_header(head)[0]


def content_matches(head: bytes, plain_digest: bytes, key_for: KeyFor) -> bool:
    """A sealed object's header says it holds the plaintext of sha256 ``plain_digest`` (under whichever key it
    names); only a full open checks the tags."""
    key_id, salt, _ = _parse_header(head)
    return hmac.compare_digest(_salt(_key(key_for, key_id), plain_digest), salt)


def _key(key_for: KeyFor, key_id: str) -> bytes:
    try:
        key = key_for(key_id)
    except KeyError:
        raise EnvelopeError(f"sealed with an unknown key id {key_id!r}") from None
    _check_key(key)
    return key


def open_envelope(blob: bytes, key_for: KeyFor) -> bytes:
    """The plaintext of a sealed object; :class:`EnvelopeError` unless every tag and the content hash hold."""
    key_id, salt, chunk = _parse_header(blob)
    header = bytes(blob[:HEADER_BYTES])
    key = _key(key_for, key_id)
    body = len(blob) - HEADER_BYTES
    step = chunk + TAG_BYTES
    chunks = max(1, -(-body // step))
    if body < TAG_BYTES or body - (chunks - 1) * step < TAG_BYTES:
        raise EnvelopeError("sealed object is truncated")
    aead = _object_aead(key, salt)
    out = bytearray(body - chunks * TAG_BYTES)
    src, dst = memoryview(blob), memoryview(out)
    plain_hash = hashlib.sha256()
    for index in range(chunks):
        at = HEADER_BYTES + index * step
        piece = src[at:at + step]
        plain = dst[index * chunk:index * chunk + len(piece) - TAG_BYTES]
        try:
            aead.decrypt_into(_NONCE.pack(index, index == chunks - 1), piece, header, plain)
        except InvalidTag:
            raise EnvelopeError(f"sealed object fails its authentication tag (chunk {index})") from None
        plain_hash.update(plain)  # while the chunk is in cache
    if not hmac.compare_digest(_salt(key, plain_hash.digest()), salt):
        raise EnvelopeError("sealed object fails its content hash")
    return bytes(out)


def open_chunks(read: Callable[[int], bytes], key_for: KeyFor) -> Iterator[bytes]:
    """Open a sealed object from a stream (``read(n)`` as of a binary file), yielding plaintext chunk by chunk.

    The content hash is checked after the last chunk, so only a generator run to its end has verified the object;
    :class:`EnvelopeError` as :func:`open_envelope`.
    """
    header = read(HEADER_BYTES)
    key_id, salt, chunk = _parse_header(header)
    key = _key(key_for, key_id)
    aead = _object_aead(key, salt)
    step = chunk + TAG_BYTES
    plain_hash = hashlib.sha256()
    piece, index = read(step), 0
    if len(piece) < TAG_BYTES:
        raise EnvelopeError("sealed object is truncated")
    while True:
        following = read(step) if len(piece) == step else b""
        if following and len(following) < TAG_BYTES:
            raise EnvelopeError("sealed object is truncated")
        try:
            plain = aead.decrypt(_NONCE.pack(index, not following), piece, header)
        except InvalidTag:
            raise EnvelopeError(f"sealed object fails its authentication tag (chunk {index})") from None
        plain_hash.update(plain)
        yield plain
        if not following:
            break
        piece, index = following, index + 1
    if not hmac.compare_digest(_salt(key, plain_hash.digest()), salt):
        raise EnvelopeError("sealed object fails its content hash")

"""Per-provider secrets and keyed derivations (HMAC-SHA256).

The pseudonym key is created at ``node init``, kept under ``<node>/secrets`` with mode 0600, never logged and
never sent anywhere. Every identifier that must stay linkable (patient pseudonyms, DICOM UIDs, date offsets)
is derived from it with HMAC-SHA256 and a domain-separation label, so re-linking needs the provider's key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import lru_cache
from pathlib import Path

from incisive.common.errors import ConfigError
from incisive.common.fsio import atomic_write_bytes

KEY_BYTES = 32


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def write_secret(path: Path, key: bytes) -> None:
    """Write a key file readable by its owner only, whole or not at all; refuses to overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(path, (key.hex() + "\n").encode(), mode=0o600, exclusive=True)


def read_secret(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"pseudonym key not found at {path}; was the node initialised?") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"pseudonym key at {path} is not valid hex") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"pseudonym key at {path} has {len(key)} bytes, expected {KEY_BYTES}")
    return key


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Pseudonymiser:
    """Keyed, deterministic derivations for one data provider.

    * patient pseudonym: ``P`` + 16 base32 chars of HMAC(key, "patient" | id)
    * UID: ``2.25.`` + a 128-bit integer from HMAC(key, "uid" | uid) (PS3.5 Annex B.2 UUID-derived form)
    * date offset: whole days in [-3651, -1826] (5 to 10 years back), per pseudonym, so intervals within a
      patient survive while real dates are far from any shifted one
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("pseudonym key must be 32 bytes")
        self._key = key
        self.uid = lru_cache(maxsize=65536)(self._uid)
        self.patient = lru_cache(maxsize=65536)(self._patient)
        self.day_offset = lru_cache(maxsize=65536)(self._day_offset)

    def _mac(self, label: str, value: str) -> bytes:
        return hmac.new(self._key, label.encode() + b"\x00" + value.encode("utf-8", "surrogateescape"),
                        hashlib.sha256).digest()

    def _patient(self, patient_id: str) -> str:
        digest = self._mac("patient", patient_id.strip())
        return "P" + base64.b32encode(digest[:10]).decode().rstrip("=")

    def _uid(self, uid: str) -> str:
        value = int.from_bytes(self._mac("uid", uid.strip().rstrip("\x00"))[:16], "big")
        return f"2.25.{value}"

    def _day_offset(self, pseudonym: str) -> int:
        n = int.from_bytes(self._mac("date-offset", pseudonym)[:4], "big")
        return -(1826 + n % 1826)

    def digest(self, label: str, value: str) -> str:
        """A keyed digest for references that must not reveal their input (e.g. source paths)."""
        return self._mac(label, value).hex()[:32]

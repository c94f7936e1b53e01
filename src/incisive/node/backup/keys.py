"""The pseudonym key in a backup: only on request, and only encrypted with a passphrase.

scrypt (N=2^15, r=8, p=1) derives a 256-bit key from the passphrase; AES-256-GCM encrypts the key file with
the node id as associated data. Without the passphrase the file is useless; with it, whoever holds the backup
can re-link pseudonyms to patients — see docs/backup.md for the trade-off.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from incisive.common.errors import InputError

KEY_FORMAT = "incisive-key-1"
PASSPHRASE_ENV = "INCISIVE_BACKUP_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
MIN_PASSPHRASE = 12
_N, _R, _P = 2**15, 8, 1


def _kdf(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def encrypt_key(plain: bytes, passphrase: str, node_id: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise InputError(f"the key passphrase must have at least {MIN_PASSPHRASE} characters")
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(_kdf(passphrase, salt, _N, _R, _P)).encrypt(nonce, plain, node_id.encode())
    doc = {"format": KEY_FORMAT, "kdf": "scrypt", "n": _N, "r": _R, "p": _P, "node_id": node_id,
           "salt": base64.b64encode(salt).decode(), "nonce": base64.b64encode(nonce).decode(),
           "ciphertext": base64.b64encode(sealed).decode()}
    return json.dumps(doc, indent=1).encode()


def decrypt_key(blob: bytes, passphrase: str) -> bytes:
    try:
        doc = json.loads(blob)
        if doc.get("format") != KEY_FORMAT:
            raise ValueError
        salt, nonce, sealed = (base64.b64decode(doc[k]) for k in ("salt", "nonce", "ciphertext"))
        key = _kdf(passphrase, salt, int(doc["n"]), int(doc["r"]), int(doc["p"]))
    except (ValueError, KeyError, TypeError):
        raise InputError("the encrypted key file is damaged") from None
    try:
        return AESGCM(key).decrypt(nonce, sealed, str(doc["node_id"]).encode())
    except InvalidTag:
        raise InputError("wrong passphrase for the encrypted pseudonym key (or the file was altered)") from None


def read_passphrase(path: Path | None) -> str | None:
    """From a file (first line) or ``$INCISIVE_BACKUP_PASSPHRASE``; None when neither is given."""
    if path is not None:
        try:
            return path.read_text().splitlines()[0]
        except (OSError, IndexError):
            raise InputError(f"cannot read a passphrase from {path}") from None
    return os.environ.get(PASSPHRASE_ENV) or None

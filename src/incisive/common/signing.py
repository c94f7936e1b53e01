"""Ed25519 request signing between a node agent and the platform.

Every agent request carries four headers; the signature covers the method, the path with its query string, the
SHA-256 of the exact body bytes, the timestamp, the nonce and the node id, one per line::

    X-Incisive-Node: <node id>
    X-Incisive-Timestamp: <unix seconds>
    X-Incisive-Nonce: <32 hex chars, never reused>
    X-Incisive-Signature: <base64 Ed25519 signature of the canonical string>

The platform refuses a request whose timestamp is outside its window, whose nonce it has seen, whose node is
unknown or revoked, or whose signature does not verify (any changed byte of method, path, body or header).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from incisive.common.errors import ConfigError
from incisive.common.fsio import atomic_write_bytes

NODE_HEADER = "X-Incisive-Node"
TIMESTAMP_HEADER = "X-Incisive-Timestamp"
NONCE_HEADER = "X-Incisive-Nonce"
SIGNATURE_HEADER = "X-Incisive-Signature"


def canonical(method: str, path: str, body: bytes, timestamp: str, nonce: str, node_id: str) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([method.upper(), path, digest, timestamp, nonce, node_id]).encode()


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public_key(b64: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(b64, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError):
        raise ValueError("not a base64 Ed25519 public key") from None


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """PEM (PKCS#8, unencrypted) with mode 0600; refuses to overwrite an existing key."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(path, pem, mode=0o600, exclusive=True)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(f"agent key not found at {path}; run 'incisive node enrol'") from None
    except ValueError:
        raise ConfigError(f"agent key at {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"agent key at {path} is not an Ed25519 key")
    return key


def sign_headers(key: Ed25519PrivateKey, node_id: str, method: str, path: str, body: bytes,
                 now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    signature = key.sign(canonical(method, path, body, timestamp, nonce, node_id))
    return {NODE_HEADER: node_id, TIMESTAMP_HEADER: timestamp, NONCE_HEADER: nonce,
            SIGNATURE_HEADER: base64.b64encode(signature).decode()}


def verify(public_key_b64_text: str, signature_b64: str, method: str, path: str, body: bytes, timestamp: str,
           nonce: str, node_id: str) -> bool:
    try:
        public_key = load_public_key(public_key_b64_text)
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, canonical(method, path, body, timestamp, nonce, node_id))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True

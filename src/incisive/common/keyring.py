"""A tenant's data keys, wrapped under the operator's master key, and the master key providers.

A :class:`KeyRing` file (JSON, mode 0600, written with :mod:`incisive.common.fsio`) holds ``tenant``, ``active``
and per key ``id`` (8 hex), ``created_at``, ``state`` (active | decrypt-only | retired) and ``wrapped`` (base64).
Each data key (32 random bytes) is wrapped with the associated data ``"incisive keyring v1" NUL tenant NUL key
id``, so a ring copied under another tenant, or a wrapped key moved to another entry, does not unwrap. New objects
are sealed under the active key, decrypt-only keys still open what they sealed, and a retired key's wrapped bytes
are dropped (what it sealed is gone). :meth:`KeyRing.destroy` overwrites the file with random bytes, fsyncs,
unlinks it and fsyncs its directory: the crypto-shred. The ring never lives in the tenant's directory or backups.

Master keys (``master_key(spec)``): ``file:PATH`` (:class:`FileMasterKey`, 32 random bytes as hex, mode 0600,
group/other access refused) and ``passphrase:PATH`` (:class:`PassphraseMasterKey`, scrypt n=2**15 r=8 p=1 of
``$INCISIVE_MASTER_PASSPHRASE``; PATH holds the parameters, salt and a verifier, never the key, so a wrong
passphrase is refused before anything is unwrapped). Both wrap with AES-256-GCM (random 96-bit nonce).

An external KMS is another :class:`KeyProvider`: a ``name`` and ``wrap(key, aad)`` / ``unwrap(blob, aad)`` that
ask the KMS to encrypt/decrypt the 32-byte data key bound to the associated data (AWS KMS ``Encrypt``/``Decrypt``
with an encryption context, Vault transit with ``context``), raising :class:`MasterKeyError` when it refuses;
its spec prefix goes into :func:`master_key`. Key material is never logged nor put in an error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from incisive.common.envelope import EnvelopeError
from incisive.common.errors import ConfigError, InputError
from incisive.common.fsio import atomic_write_bytes, atomic_write_text, fsync_dir

__all__ = ["PASSPHRASE_ENV", "FileMasterKey", "KeyInfo", "KeyProvider", "KeyRing", "MasterKeyError",
           "PassphraseMasterKey", "master_key"]

KEY_BYTES = 32
PASSPHRASE_ENV = "INCISIVE_MASTER_PASSPHRASE"  # noqa: S105 (the variable's name, not a secret)
FORMAT = "incisive-keyring"
KeyState = Literal["active", "decrypt-only", "retired"]


class MasterKeyError(ConfigError):
    """The master key is missing, unreadable, loosely protected or wrong: refuse to start."""


class KeyProvider(Protocol):
    """What wraps a tenant's data keys: a master key file, a passphrase, or an external KMS."""

    name: str

    def wrap(self, key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, aad: bytes) -> bytes: ...  # MasterKeyError on a wrong master key


def _read(path: Path, what: str) -> bytes:
    """A private file's bytes: refused when missing, not a regular file or open to group/other."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise MasterKeyError(f"{what} at {path} is not a regular file")
        if st.st_mode & 0o077:
            raise MasterKeyError(f"{what} at {path} is accessible to group/other (mode {st.st_mode & 0o777:03o});"
                                 f" run: chmod 600 {path}")
        return path.read_bytes()
    except FileNotFoundError:
        raise MasterKeyError(f"{what} not found at {path}; create it (incisive central init) or fix the "
                             "master_key setting") from None
    except OSError as exc:
        raise MasterKeyError(f"{what} at {path} cannot be read ({exc.strerror}); check its owner") from None


def _write_new(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        atomic_write_bytes(path, data, mode=0o600, exclusive=True)
    except FileExistsError:
        raise MasterKeyError(f"{path} already exists; refusing to overwrite a master key") from None


class _AesGcmWrap:
    name: str = "aes-gcm"

    def __init__(self, kek: bytes) -> None:
        self._aead = AESGCM(kek)

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, key, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], aad)
        except (InvalidTag, ValueError):
            raise MasterKeyError(f"the {self.name} master key does not unwrap this key: wrong master key, or a "
                                 "key ring altered or moved from another tenant") from None


class FileMasterKey(_AesGcmWrap):
    """32 random bytes, hex, in a 0600 file."""

    name = "file"

    @classmethod
    def create(cls, path: Path) -> FileMasterKey:
        key = secrets.token_bytes(KEY_BYTES)
        _write_new(path, (key.hex() + "\n").encode())
        return cls(key)

    @classmethod
    def open(cls, path: Path) -> FileMasterKey:
        text = _read(path, "master key file").strip()
        try:
            key = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise MasterKeyError(f"master key file {path} is not hex; restore it from its safe copy") from None
        if len(key) != KEY_BYTES:
            raise MasterKeyError(f"master key file {path} holds {len(key)} bytes, expected {KEY_BYTES}; restore it "
                                 "from its safe copy") from None
        return cls(key)


_SCRYPT = {"n": 2**15, "r": 8, "p": 1}


def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(passphrase.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=64,
                          maxmem=256 * n * r + (1 << 20))


def _passphrase(passphrase: str | None) -> str:
    value = passphrase if passphrase is not None else os.environ.get(PASSPHRASE_ENV)
    if not value:
        raise MasterKeyError(f"no master passphrase: set ${PASSPHRASE_ENV}")
    return value


class PassphraseMasterKey(_AesGcmWrap):
    """The master key is scrypt of a passphrase ($INCISIVE_MASTER_PASSPHRASE); PATH keeps parameters + verifier."""

    name = "passphrase"

    @classmethod
    def create(cls, path: Path, passphrase: str | None = None) -> PassphraseMasterKey:
        secret = _passphrase(passphrase)
        salt = secrets.token_bytes(32)
        derived = _scrypt(secret, salt, **_SCRYPT)
        doc = {"kdf": "scrypt", **_SCRYPT, "salt": _b64(salt), "verifier": _b64(_verifier(derived))}
        _write_new(path, (json.dumps(doc, indent=1) + "\n").encode())
        return cls(derived[:KEY_BYTES])

    @classmethod
    def open(cls, path: Path, passphrase: str | None = None) -> PassphraseMasterKey:
        raw = _read(path, "master passphrase parameters")
        secret = _passphrase(passphrase)
        try:
            doc = json.loads(raw)
            if doc["kdf"] != "scrypt":
                raise ValueError
            n, r, p = int(doc["n"]), int(doc["r"]), int(doc["p"])
            salt, verifier = _unb64(doc["salt"]), _unb64(doc["verifier"])
            if not (2**14 <= n <= 2**22 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
                raise ValueError
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise MasterKeyError(f"master passphrase parameters at {path} are not valid; restore the file") from None
        derived = _scrypt(secret, salt, n, r, p)
        if not hmac.compare_digest(_verifier(derived), verifier):
            raise MasterKeyError(f"wrong passphrase for {path} (${PASSPHRASE_ENV})")
        return cls(derived[:KEY_BYTES])


def _verifier(derived: bytes) -> bytes:
    return hmac.new(derived[KEY_BYTES:], b"incisive master verifier v1", hashlib.sha256).digest()


def master_key(spec: str) -> KeyProvider:
    """The provider a ``master_key`` setting names: ``file:PATH`` or ``passphrase:PATH``."""
    kind, _, where = spec.partition(":")
    if not where:
        raise MasterKeyError("master_key must be 'file:PATH' or 'passphrase:PATH'" if spec else
                             "no master_key is set for this encrypted store")
    path = Path(where).expanduser()
    if kind == "file":
        return FileMasterKey.open(path)
    if kind == "passphrase":
        return PassphraseMasterKey.open(path)
    raise MasterKeyError(f"unknown master key kind {kind!r}: use 'file:PATH' or 'passphrase:PATH'")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class KeyInfo:
    id: str
    created_at: str
    state: KeyState


class KeyRing:
    """One tenant's data keys. Every change is written durably and atomically before it takes effect."""

    def __init__(self, path: Path, tenant: str, provider: KeyProvider, doc: dict[str, Any]) -> None:
        self.path = path
        self.tenant = tenant
        self.provider = provider
        self._doc = doc
        self._lock = threading.RLock()  # sealing threads read (active id, key) while a rotation may change them
        self._keys: dict[str, bytes] = {}
        for entry in doc["keys"]:
            if entry["state"] != "retired":
                self._keys[entry["id"]] = self._unwrap(entry)

    def _aad(self, key_id: str) -> bytes:
        return b"incisive keyring v1\x00" + self.tenant.encode() + b"\x00" + key_id.encode()

    def _unwrap(self, entry: dict[str, Any]) -> bytes:
        try:
            blob = _unb64(entry["wrapped"])
        except (ValueError, binascii.Error):
            raise EnvelopeError(f"key ring {self.path}: key {entry['id']} is damaged") from None
        key = self.provider.unwrap(blob, self._aad(entry["id"]))
        if len(key) != KEY_BYTES:
            raise EnvelopeError(f"key ring {self.path}: key {entry['id']} is damaged")
        return key

    @classmethod
    def create(cls, path: Path, tenant: str, provider: KeyProvider) -> KeyRing:
        """A new ring with one active key; refuses to replace an existing ring."""
        if not tenant:
            raise InputError("a key ring needs a tenant id")
        path = Path(path)
        doc: dict[str, Any] = {"format": FORMAT, "version": 1, "tenant": tenant, "provider": provider.name,
                               "active": "", "keys": []}
        ring = cls(path, tenant, provider, doc)
        ring._new_key()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            atomic_write_text(path, ring._text(), mode=0o600, exclusive=True)
        except FileExistsError:
            raise ConfigError(f"a key ring already exists at {path}") from None
        return ring

    @classmethod
    def open(cls, path: Path, tenant: str, provider: KeyProvider) -> KeyRing:
        """Open and unwrap every usable key (:class:`MasterKeyError` on a wrong master key)."""
        path = Path(path)
        return cls(path, tenant, provider, cls._load(path, tenant))

    @staticmethod
    def _load(path: Path, tenant: str) -> dict[str, Any]:
        try:
            st = path.stat()
            raw = path.read_bytes()
        except FileNotFoundError:
            raise EnvelopeError(f"no key ring at {path}: the tenant's keys are gone (erased?)") from None
        if st.st_mode & 0o077:
            raise ConfigError(f"key ring {path} is accessible to group/other; run: chmod 600 {path}")
        try:
            doc = json.loads(raw)
            if doc.get("format") != FORMAT or doc.get("version") != 1:
                raise ValueError
            states = {e["id"]: e["state"] for e in doc["keys"]}
            if states.get(doc["active"]) != "active" or not set(states.values()) <= {"active", "decrypt-only",
                                                                                       "retired"}:
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise EnvelopeError(f"key ring {path} is damaged (not a version 1 key ring)") from None
        if doc["tenant"] != tenant:
            raise EnvelopeError(f"key ring {path} belongs to another tenant")
        return dict(doc)

    def _text(self) -> str:
        return json.dumps(self._doc, indent=1) + "\n"

    def _save(self) -> None:
        atomic_write_text(self.path, self._text(), mode=0o600)

    def _new_key(self) -> str:
        key_id = secrets.token_hex(4)
        while key_id in {e["id"] for e in self._doc["keys"]}:
            key_id = secrets.token_hex(4)
        key = secrets.token_bytes(KEY_BYTES)
        for entry in self._doc["keys"]:
            if entry["state"] == "active":
                entry["state"] = "decrypt-only"
        self._doc["keys"].append({"id": key_id, "created_at": _now(), "state": "active",
                                  "wrapped": _b64(self.provider.wrap(key, self._aad(key_id)))})
        self._keys[key_id] = key
        self._doc["active"] = key_id
        return key_id

    @property
    def active_id(self) -> str:
        return str(self._doc["active"])

    def active_key(self) -> bytes:
        return self.active()[1]

    def active(self) -> tuple[str, bytes]:
        """(id, key) of the active key, read together (what a seal must use)."""
        with self._lock:
            return self.active_id, self._keys[self.active_id]

    def key(self, key_id: str) -> bytes:
        """A usable data key; :class:`EnvelopeError` for an unknown or retired one.

        An id this process does not know is looked up once more in the file (another process may have added it).
        """
        key = self._keys.get(key_id)
        if key is None:
            self.reload()
            key = self._keys.get(key_id)
        if key is None:
            raise EnvelopeError(f"sealed with key {key_id!r}, which is not in the tenant's key ring (retired?)")
        return key

    def reload(self) -> None:
        with self._lock:
            doc = self._load(self.path, self.tenant)
            keys = {e["id"]: self._keys.get(e["id"]) or self._unwrap(e) for e in doc["keys"]
                    if e["state"] != "retired"}
            self._doc, self._keys = doc, keys

    def ids(self) -> list[str]:
        return [str(e["id"]) for e in self._doc["keys"]]

    def info(self) -> list[KeyInfo]:
        return [KeyInfo(e["id"], e["created_at"], e["state"]) for e in self._doc["keys"]]

    def add_key(self) -> str:
        """A new active key (returned); the previous one becomes decrypt-only. Durable when it returns."""
        with self._lock:
            previous = ([dict(e) for e in self._doc["keys"]], self._doc["active"])
            key_id = self._new_key()
            try:
                self._save()
            except BaseException:
                self._doc["keys"], self._doc["active"] = previous
                self._keys.pop(key_id, None)
                raise
            return key_id

    def retire(self, key_id: str) -> None:
        """Drop a non-active key's wrapped bytes: what it sealed can no longer be opened."""
        with self._lock:
            entry = next((e for e in self._doc["keys"] if e["id"] == key_id), None)
            if entry is None:
                raise InputError(f"no key {key_id!r} in the key ring")
            if key_id == self.active_id:
                raise InputError("the active key cannot be retired; add a new key first")
            before = dict(entry)
            entry["state"], entry["wrapped"] = "retired", ""
            try:
                self._save()
            except BaseException:
                entry.update(before)
                raise
            self._keys.pop(key_id, None)

    def rewrap(self, new_provider: KeyProvider) -> None:
        """Wrap every usable key under ``new_provider`` (e.g. a new master key), in one atomic write."""
        with self._lock:
            entries = [dict(e) for e in self._doc["keys"]]
            for entry in entries:
                if entry["state"] != "retired":
                    entry["wrapped"] = _b64(new_provider.wrap(self._keys[entry["id"]], self._aad(entry["id"])))
            doc = {**self._doc, "keys": entries, "provider": new_provider.name}
            atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n", mode=0o600)
            self._doc, self.provider = doc, new_provider

    def destroy(self) -> None:
        """Crypto-shred: overwrite the file with random bytes, fsync, unlink, fsync the directory."""
        with self._lock:
            try:
                fd = os.open(self.path, os.O_WRONLY)
            except FileNotFoundError:
                fd = -1  # already gone: make sure the unlink is durable
            if fd >= 0:
                try:
                    view = memoryview(secrets.token_bytes(max(os.fstat(fd).st_size, 1)))
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self.path.unlink()
            fsync_dir(self.path.parent)
            self._keys.clear()
            self._doc = {**self._doc, "keys": [], "active": ""}

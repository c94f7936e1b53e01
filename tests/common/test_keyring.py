"""Master key providers and a tenant's key ring: modes, wrong keys, moves between tenants, rotation, shredding."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from incisive.common.envelope import EnvelopeError, open_envelope, seal
from incisive.common.errors import ConfigError
from incisive.common.keyring import (
    PASSPHRASE_ENV,
    FileMasterKey,
    KeyProvider,
    KeyRing,
    MasterKeyError,
    PassphraseMasterKey,
    master_key,
)


@pytest.fixture
def master(tmp_path: Path) -> FileMasterKey:
    return FileMasterKey.create(tmp_path / "secrets" / "master.key")


def test_file_master_key_is_private_and_checked(tmp_path: Path, master: FileMasterKey) -> None:
    path = tmp_path / "secrets" / "master.key"
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text().strip()
    assert len(bytes.fromhex(text)) == 32
    blob = master.wrap(b"k" * 32, b"aad")
    assert FileMasterKey.open(path).unwrap(blob, b"aad") == b"k" * 32
    assert master_key(f"file:{path}").unwrap(blob, b"aad") == b"k" * 32
    with pytest.raises(MasterKeyError, match="already exists"):
        FileMasterKey.create(path)

    path.chmod(0o640)
    with pytest.raises(MasterKeyError, match="chmod 600") as loose:
        FileMasterKey.open(path)
    assert text not in str(loose.value)
    path.chmod(0o604)
    with pytest.raises(MasterKeyError, match="group/other"):
        FileMasterKey.open(path)
    path.chmod(0o600)

    path.write_text("ab" * 31 + "\n")
    with pytest.raises(MasterKeyError, match="31 bytes, expected 32"):
        FileMasterKey.open(path)
    path.write_text("not hex at all\n")
    with pytest.raises(MasterKeyError, match="not hex") as bad:
        FileMasterKey.open(path)
    assert "not hex at all" not in str(bad.value)
    with pytest.raises(MasterKeyError, match="not found"):
        FileMasterKey.open(tmp_path / "missing.key")
    with pytest.raises(MasterKeyError):
        master_key("")
    with pytest.raises(MasterKeyError, match="unknown master key kind"):
        master_key("kms:arn")


def test_wrong_master_key_and_wrong_aad_refuse(tmp_path: Path, master: FileMasterKey) -> None:
    other = FileMasterKey.create(tmp_path / "other.key")
    blob = master.wrap(b"k" * 32, b"tenant-a")
    with pytest.raises(MasterKeyError, match="wrong master key"):
        other.unwrap(blob, b"tenant-a")
    with pytest.raises(MasterKeyError):
        master.unwrap(blob, b"tenant-b")


def test_passphrase_right_and_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "master.scrypt"
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    with pytest.raises(MasterKeyError, match=PASSPHRASE_ENV):
        PassphraseMasterKey.create(path)
    assert not path.exists()
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    created = PassphraseMasterKey.create(path)
    doc = json.loads(path.read_text())
    assert (doc["kdf"], doc["n"], doc["r"], doc["p"]) == ("scrypt", 2**15, 8, 1)
    assert "correct horse" not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    blob = created.wrap(b"k" * 32, b"aad")
    assert master_key(f"passphrase:{path}").unwrap(blob, b"aad") == b"k" * 32

    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(MasterKeyError, match="wrong passphrase"):
        master_key(f"passphrase:{path}")
    assert PassphraseMasterKey.open(path, "correct horse battery staple").unwrap(blob, b"aad") == b"k" * 32
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(MasterKeyError, match=PASSPHRASE_ENV):
        PassphraseMasterKey.open(path)
    path.write_text("{}")
    with pytest.raises(MasterKeyError, match="not valid"):
        PassphraseMasterKey.open(path, "x")


def _ring(tmp_path: Path, master: KeyProvider, tenant: str = "tenant-a") -> KeyRing:
    return KeyRing.create(tmp_path / "keys" / f"{tenant}.json", tenant, master)


def test_ring_file_holds_only_wrapped_keys(tmp_path: Path, master: FileMasterKey) -> None:
    ring = _ring(tmp_path, master)
    assert ring.path.stat().st_mode & 0o777 == 0o600
    doc = json.loads(ring.path.read_text())
    assert doc["tenant"] == "tenant-a" and doc["active"] == ring.active_id and ring.ids() == [ring.active_id]
    entry = doc["keys"][0]
    assert set(entry) == {"id", "created_at", "state", "wrapped"} and entry["state"] == "active"
    assert ring.active_key().hex() not in ring.path.read_text()
    again = KeyRing.open(ring.path, "tenant-a", master)
    assert again.key(ring.active_id) == ring.active_key()
    with pytest.raises(ConfigError, match="already exists"):
        _ring(tmp_path, master)


def test_ring_moved_to_another_tenant_fails(tmp_path: Path, master: FileMasterKey) -> None:
    ring = _ring(tmp_path, master)
    moved = tmp_path / "keys" / "tenant-b.json"
    moved.write_bytes(ring.path.read_bytes())
    moved.chmod(0o600)
    with pytest.raises(EnvelopeError, match="another tenant"):
        KeyRing.open(moved, "tenant-b", master)
    doc = json.loads(moved.read_text())
    doc["tenant"] = "tenant-b"  # the tenant field edited too: the wrapped keys are bound to tenant-a
    moved.write_text(json.dumps(doc))
    with pytest.raises(MasterKeyError):
        KeyRing.open(moved, "tenant-b", master)


def test_wrong_master_key_refuses_the_ring(tmp_path: Path, master: FileMasterKey) -> None:
    ring = _ring(tmp_path, master)
    other = FileMasterKey.create(tmp_path / "other.key")
    with pytest.raises(MasterKeyError, match="wrong master key"):
        KeyRing.open(ring.path, "tenant-a", other)


def test_damaged_or_loose_ring(tmp_path: Path, master: FileMasterKey) -> None:
    ring = _ring(tmp_path, master)
    ring.path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        KeyRing.open(ring.path, "tenant-a", master)
    ring.path.chmod(0o600)
    ring.path.write_text("{not json")
    with pytest.raises(EnvelopeError, match="damaged"):
        KeyRing.open(ring.path, "tenant-a", master)
    with pytest.raises(EnvelopeError, match="no key ring"):
        KeyRing.open(tmp_path / "absent.json", "tenant-a", master)


def test_add_key_retire_and_reload(tmp_path: Path, master: FileMasterKey) -> None:
    ring = _ring(tmp_path, master)
    first = ring.active_id
    old = seal(b"sealed under the first key", ring.active_key(), first)
    second = ring.add_key()
    assert ring.active_id == second != first and ring.ids() == [first, second]
    assert [i.state for i in ring.info()] == ["decrypt-only", "active"]
    new = seal(b"sealed under the second key", ring.active_key(), second)
    reopened = KeyRing.open(ring.path, "tenant-a", master)
    assert open_envelope(old, reopened.key) == b"sealed under the first key"
    assert open_envelope(new, reopened.key) == b"sealed under the second key"

    stale = KeyRing.open(ring.path, "tenant-a", master)
    third = ring.add_key()  # another process adds a key: a stale ring finds it in the file
    assert stale.key(third) == ring.key(third)

    with pytest.raises(Exception, match="active key cannot be retired"):
        ring.retire(third)
    ring.retire(first)
    assert json.loads(ring.path.read_text())["keys"][0] == {**json.loads(ring.path.read_text())["keys"][0],
                                                            "state": "retired", "wrapped": ""}
    with pytest.raises(EnvelopeError, match="not in the tenant's key ring"):
        open_envelope(old, ring.key)
    with pytest.raises(EnvelopeError):
        open_envelope(old, KeyRing.open(ring.path, "tenant-a", master).key)
    assert open_envelope(new, ring.key) == b"sealed under the second key"


def test_rewrap_keeps_data_readable(tmp_path: Path, master: FileMasterKey, monkeypatch: pytest.MonkeyPatch) -> None:
    ring = _ring(tmp_path, master)
    ring.add_key()
    blobs = {k: seal(k.encode(), ring.key(k), k) for k in ring.ids()}
    monkeypatch.setenv(PASSPHRASE_ENV, "a new passphrase")
    new_master = PassphraseMasterKey.create(tmp_path / "master.scrypt")
    ring.rewrap(new_master)
    assert json.loads(ring.path.read_text())["provider"] == "passphrase"
    with pytest.raises(MasterKeyError):
        KeyRing.open(ring.path, "tenant-a", master)
    reopened = KeyRing.open(ring.path, "tenant-a", master_key(f"passphrase:{tmp_path / 'master.scrypt'}"))
    for key_id, blob in blobs.items():
        assert open_envelope(blob, reopened.key) == key_id.encode()


def test_destroy_makes_data_unreadable(tmp_path: Path, master: FileMasterKey) -> None:
    ring = _ring(tmp_path, master)
    blob = seal(b"to be shredded", ring.active_key(), ring.active_id)
    witness = tmp_path / "witness"  # a second name of the same inode shows what the bytes became
    os.link(ring.path, witness)
    size = witness.stat().st_size
    ring.destroy()
    assert not ring.path.exists()
    with pytest.raises(EnvelopeError):
        open_envelope(blob, ring.key)
    with pytest.raises(EnvelopeError, match="no key ring"):
        KeyRing.open(ring.path, "tenant-a", master)
    left = witness.read_bytes()
    assert len(left) == size and b"wrapped" not in left and b"tenant-a" not in left  # overwritten before unlink
    ring.destroy()  # idempotent


class FakeKms:
    """What an external KMS provider looks like: only wrap/unwrap with associated data, here by XOR + a MAC."""

    name = "fake-kms"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        self.calls.append("wrap")
        return bytes(b ^ 0x5A for b in key) + hashlib.sha256(aad + key).digest()

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        self.calls.append("unwrap")
        key = bytes(b ^ 0x5A for b in blob[:32])
        if hashlib.sha256(aad + key).digest() != blob[32:]:
            raise MasterKeyError("the KMS refused to unwrap")
        return key


def test_an_external_kms_is_a_key_provider(tmp_path: Path) -> None:
    kms = FakeKms()
    ring = _ring(tmp_path, kms)
    blob = seal(b"via kms", ring.active_key(), ring.active_id)
    reopened = KeyRing.open(ring.path, "tenant-a", kms)
    assert open_envelope(blob, reopened.key) == b"via kms" and kms.calls == ["wrap", "unwrap"]
    assert json.loads(ring.path.read_text())["provider"] == "fake-kms"

"""The pseudonym key stays out of backups unless asked for, and then only passphrase-encrypted."""

from __future__ import annotations

from pathlib import Path

import pytest

from incisive.common.crypto import read_secret
from incisive.common.errors import InputError
from incisive.node.backup import ops
from incisive.node.backup.keys import decrypt_key, encrypt_key
from incisive.node.backup.stage import KEY_FILE
from incisive.node.home import Node
from tests.node.backup.helpers import dir_target

PASSPHRASE = "correct horse battery staple"


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_key_excluded_by_default(sqlite_node: Node, tmp_path: Path) -> None:
    target = dir_target(tmp_path)
    report, manifest = ops.run(sqlite_node, target)
    key = read_secret(sqlite_node.key_path)
    everything = _all_bytes(Path(target.location))
    assert not report.key_included and not manifest.key_included
    assert key not in everything and key.hex().encode() not in everything
    assert not any(p.name == KEY_FILE for p in Path(target.location).rglob("*"))


def test_key_included_encrypted_and_restored(sqlite_node: Node, tmp_path: Path) -> None:
    target = dir_target(tmp_path)
    report, _ = ops.run(sqlite_node, target, passphrase=PASSPHRASE)
    key = read_secret(sqlite_node.key_path)
    everything = _all_bytes(Path(target.location))
    assert report.key_included and key.hex().encode() not in everything and key not in everything

    with pytest.raises(InputError, match="wrong passphrase"):
        ops.restore(target, sqlite_node.settings.node_id, "latest", tmp_path / "bad", passphrase="not the one at all")
    assert not (tmp_path / "bad").exists()  # refused before writing anything

    locked = ops.restore(target, sqlite_node.settings.node_id, "latest", tmp_path / "locked")
    assert not locked.key_restored and (tmp_path / "locked" / "secrets" / KEY_FILE).is_file()

    restored = ops.restore(target, sqlite_node.settings.node_id, "latest", tmp_path / "r", passphrase=PASSPHRASE)
    assert restored.key_restored
    key_path = tmp_path / "r" / "secrets" / "pseudonym.key"
    assert read_secret(key_path) == key and key_path.stat().st_mode & 0o777 == 0o600


def test_encryption_round_trip_and_rules() -> None:
    blob = encrypt_key(b"00ff\n", PASSPHRASE, "node-a")
    assert decrypt_key(blob, PASSPHRASE) == b"00ff\n"
    with pytest.raises(InputError, match="at least"):
        encrypt_key(b"x", "short", "node-a")
    with pytest.raises(InputError, match="wrong passphrase"):
        decrypt_key(blob.replace(b'"node_id": "node-a"', b'"node_id": "node-b"'), PASSPHRASE)

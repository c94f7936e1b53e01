"""What goes into a snapshot besides objects: the catalogue dump, node config and policy, optionally the key.

On a node with an encrypted store (a Central Node tenant: ``settings.keyring``) the catalogue dump is sealed
with the tenant's active data key (:mod:`incisive.common.envelope`, file ``<dump>.sealed``) before it is
hashed into the manifest, so a snapshot holds ciphertext only: the objects are sealed already, and the dump's
pseudonyms and UIDs are too. Restoring needs the tenant's key ring, which lives outside the node directory and
outside every backup: once the tenant is erased (its ring destroyed), no snapshot of it can be read again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from incisive.common.crypto import read_secret
from incisive.common.envelope import open_envelope, seal
from incisive.common.errors import InputError
from incisive.common.keyring import KeyRing, master_key
from incisive.common.settings import CONFIG_NAME, NodeSettings
from incisive.node.backup import dump
from incisive.node.backup.keys import encrypt_key
from incisive.node.backup.manifest import file_digest
from incisive.node.home import Node

# Node files that are configuration or policy (never the key, never logs). Missing ones are skipped.
CONFIG_FILES = ("incisive.toml", "policy.toml", "policy.json", "backup/targets.json",
                "compliance/erasures.json")  # the erasure list a restore re-applies (node/erasure.py)
KEY_FILE = "pseudonym.key.enc"
SEALED = ".sealed"


@dataclass
class Staged:
    catalogue: dump.CatalogueSnapshot
    files: dict[str, dict[str, Any]]  # relative path in the snapshot folder -> {"sha256", "size"}
    key_included: bool

    @property
    def catalogue_entry(self) -> dict[str, str]:
        return {"dialect": self.catalogue.dialect, "file": self.catalogue.file.name}


def stage(node: Node, out_dir: Path, passphrase: str | None = None) -> Staged:
    """Write the catalogue dump, config files and (with a passphrase) the encrypted key into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    snap = dump.snapshot(node.catalogue, out_dir)
    ring = node.keyring
    if ring is not None:
        sealed = snap.file.with_name(snap.file.name + SEALED)
        sealed.write_bytes(seal(snap.file.read_bytes(), ring.active_key(), ring.active_id))
        snap.file.unlink()
        snap.file = sealed
    written = [snap.file]
    for rel in CONFIG_FILES:
        src = node.home / rel
        if src.is_file():
            dst = out_dir / "config" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            written.append(dst)
    if passphrase is not None:
        key_file = out_dir / KEY_FILE
        key_file.write_bytes(encrypt_key(read_secret(node.key_path).hex().encode() + b"\n", passphrase,
                                         node.settings.node_id))
        written.append(key_file)
    files = {}
    for path in written:
        sha, size = file_digest(path)
        files[path.relative_to(out_dir).as_posix()] = {"sha256": sha, "size": size}
    return Staged(snap, files, passphrase is not None)


def snapshot_ring(folder: Path) -> KeyRing:
    """The key ring a sealed snapshot needs, from the snapshot's own config (checked before anything is copied).

    :class:`InputError` when it cannot be opened: a missing ring is an erased tenant (crypto-shredded)."""
    config = folder / "config" / CONFIG_NAME
    settings = NodeSettings.from_file(config, home=folder)
    if not settings.keyring:
        raise InputError("this snapshot's catalogue is sealed but its configuration names no key ring")
    ring_path = Path(settings.keyring)
    if not ring_path.is_file():
        raise InputError("this snapshot is sealed with a tenant key that no longer exists (the tenant was erased: "
                         "crypto-shredded); it cannot be restored")
    return KeyRing.open(ring_path, settings.node_id, master_key(settings.master_key))


def unseal_dump(path: Path, ring: KeyRing, out_dir: Path) -> Path:
    """Open a sealed catalogue dump into ``out_dir`` (the node being restored, never the backup); returns the
    plaintext file, which the caller removes once loaded."""
    plain = out_dir / path.name[: -len(SEALED)]
    plain.write_bytes(open_envelope(path.read_bytes(), ring.key))
    return plain

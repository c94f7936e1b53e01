"""What goes into a snapshot besides objects: the catalogue dump, node config and policy, optionally the key."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from incisive.common.crypto import read_secret
from incisive.node.backup import dump
from incisive.node.backup.keys import encrypt_key
from incisive.node.backup.manifest import file_digest
from incisive.node.home import Node

# Node files that are configuration or policy (never the key, never logs). Missing ones are skipped.
CONFIG_FILES = ("incisive.toml", "policy.toml", "policy.json", "backup/targets.json")
KEY_FILE = "pseudonym.key.enc"


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

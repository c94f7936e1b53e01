"""Restore a snapshot into a new, working node directory: objects re-hashed as they are copied (a bad copy
stops the restore), the catalogue loaded (SQLite file or ``pg_restore`` into an empty database), the config
and policy put back, and the pseudonym key decrypted when the snapshot holds it and the passphrase is given.
Last, data subjects erased since the snapshot are removed again (:func:`incisive.node.erasure.reapply_at_restore`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from incisive.common.crypto import write_secret
from incisive.common.errors import InputError, IntegrityError
from incisive.common.fsio import atomic_write_bytes, atomic_write_text, fsync_dir
from incisive.common.keyring import KeyRing
from incisive.common.logging import get_logger
from incisive.node.backup import dump
from incisive.node.backup.keys import decrypt_key
from incisive.node.backup.manifest import Manifest, file_digest
from incisive.node.backup.stage import KEY_FILE, SEALED, snapshot_ring, unseal_dump
from incisive.node.erasure import reapply_at_restore
from incisive.node.home import Node
from incisive.node.store import ObjectStore

log = get_logger("backup")
Progress = Callable[[int, int, int, int], None]
ObjectPath = Callable[[str, str], Path]  # (area, digest) -> file holding that object


@dataclass
class RestoreReport:
    snapshot: str
    home: str
    objects: int = 0
    bytes: int = 0
    catalogue: str = ""
    key_restored: bool = False
    erased_again: int = 0  # subjects removed again from the erasure lists (node/erasure.py)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _copy_verified(src: Path, digest: str, dest: ObjectStore) -> int:
    final = dest.path(digest)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.tmp / f"{digest}.part"
    h = hashlib.sha256()
    size = 0
    with src.open("rb") as fin, tmp.open("wb") as fout:
        while chunk := fin.read(1 << 20):
            h.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    if h.hexdigest() != digest:
        tmp.unlink()
        raise IntegrityError(f"object {digest} in the backup fails its checksum; run 'incisive backup verify'")
    os.replace(tmp, final)
    return size


def _check_files(manifest: Manifest, folder: Path) -> None:
    for rel, meta in manifest.files.items():
        path = folder / rel
        if not path.is_file():
            raise IntegrityError(f"snapshot {manifest.id} lacks {rel}")
        if file_digest(path)[0] != meta["sha256"]:
            raise IntegrityError(f"{rel} in snapshot {manifest.id} fails its checksum")


def _write_config(manifest: Manifest, folder: Path, to: Path, catalogue_url: str) -> None:
    for rel in manifest.files:
        if not rel.startswith("config/"):
            continue
        dst = to / rel[len("config/"):]
        dst.parent.mkdir(parents=True, exist_ok=True)
        text = (folder / rel).read_text()
        if dst.name == "incisive.toml":
            lines = [f"catalogue_url = {json.dumps(catalogue_url)}" if line.startswith("catalogue_url =") else line
                     for line in text.splitlines()]
            text = "\n".join(lines) + "\n"
        atomic_write_text(dst, text)


def _catalogue(manifest: Manifest, folder: Path, to: Path, catalogue_url: str, ring: KeyRing | None = None) -> str:
    dialect, dump_file = manifest.catalogue["dialect"], folder / manifest.catalogue["file"]
    if ring is not None:  # a tenant's sealed dump: opened into the new node directory, loaded, removed
        plain = unseal_dump(dump_file, ring, to)
        try:
            return _load_catalogue(dialect, plain, to, catalogue_url)
        finally:
            plain.unlink(missing_ok=True)
    return _load_catalogue(dialect, dump_file, to, catalogue_url)


def _load_catalogue(dialect: str, dump_file: Path, to: Path, catalogue_url: str) -> str:
    wanted = make_url(catalogue_url).get_backend_name() if catalogue_url else "sqlite"
    if dialect != wanted:
        raise InputError(f"this snapshot holds a {dialect} catalogue; restoring it into {wanted} is not supported"
                         + ("; give --catalogue-url of an empty PostgreSQL database" if dialect == "postgresql"
                            else ""))
    if dialect == "sqlite":
        dump.restore_sqlite(dump_file, dump.sqlite_path(catalogue_url) if catalogue_url else to / "catalogue.db")
    else:
        dump.restore_pg(dump_file, catalogue_url)
    return dialect


def restore_layout(manifest: Manifest, folder: Path, object_path: ObjectPath, to: Path, catalogue_url: str = "",
                   passphrase: str | None = None, progress: Progress | None = None) -> RestoreReport:
    """Build a node at ``to`` from a snapshot folder (dump, config, key) and a way to find its objects."""
    to = to.expanduser().resolve()
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise InputError(f"{to} exists and is not empty; restore into a new directory")
    _check_files(manifest, folder)
    # a Central Node tenant's snapshot: its key ring must open before anything is copied (erased: it cannot)
    ring = snapshot_ring(folder) if manifest.catalogue["file"].endswith(SEALED) else None
    if manifest.key_included and passphrase is not None:  # fail on a wrong passphrase before copying anything
        key_hex = decrypt_key((folder / KEY_FILE).read_bytes(), passphrase)
    else:
        key_hex = None
    report = RestoreReport(manifest.id, str(to))
    to.mkdir(parents=True, exist_ok=True)
    stores = {"store": ObjectStore(to / "store"), "quarantine": ObjectStore(to / "quarantine")}
    for store in stores.values():
        store.init()
    total = manifest.totals.get("objects", 0)
    total_bytes = manifest.totals.get("bytes", 0)
    for area, entries in manifest.objects.items():
        for digest, _size in entries:
            report.bytes += _copy_verified(object_path(area, digest), digest, stores[area])
            report.objects += 1
            if progress and (report.objects % 64 == 0 or report.objects == total):
                progress(report.objects, total, report.bytes, total_bytes)
    os.sync()
    _write_config(manifest, folder, to, catalogue_url)
    report.catalogue = _catalogue(manifest, folder, to, catalogue_url, ring)
    key_path = to / "secrets" / "pseudonym.key"
    if key_hex is not None:
        write_secret(key_path, bytes.fromhex(key_hex.decode().strip()))
        report.key_restored = True
    elif manifest.key_included:
        key_path.parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write_bytes(key_path.parent / KEY_FILE, (folder / KEY_FILE).read_bytes(), mode=0o600)
        report.warnings.append(f"the pseudonym key is still encrypted at {key_path.parent / KEY_FILE}; "
                               "restore again with the passphrase to unlock it")
    else:
        report.warnings.append(f"the pseudonym key is not in backups: copy your offline copy to {key_path} "
                               "(mode 0600) before importing new data")
    fsync_dir(to)
    node = Node.open(to)  # the schema is current and the node opens
    report.erased_again = reapply_at_restore(node, folder)  # an erasure recorded after this snapshot stays done
    if report.erased_again:
        report.warnings.append(f"{report.erased_again} erased data subject(s) removed again (erasure list)")
    node.catalogue.dispose()
    log.info("backup restore: snapshot=%s objects=%d catalogue=%s key=%s", manifest.id, report.objects,
             report.catalogue, report.key_restored)
    return report

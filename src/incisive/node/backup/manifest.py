"""Snapshot manifests and the layout of a directory target.

```
<location>/incisive/<node_id>/
  FORMAT                         "incisive-backup 1"
  lock                           flock'd by run and prune
  objects/ab/cd/<sha256>         one content-addressed pool shared by every snapshot (store + quarantine)
  tmp/                           partial copies (removed by the next run)
  snapshots/<id>/catalogue.*     consistent catalogue dump (SQLite file or pg_dump custom archive)
  snapshots/<id>/config/…        incisive.toml, backup/targets.json, policy files
  snapshots/<id>/pseudonym.key.enc   only with --include-keys (passphrase-encrypted)
  snapshots/<id>/manifest.json   written last, atomically: a snapshot exists iff its manifest does
  snapshots/<id>/verified.json   the last verification of this snapshot
```
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from incisive.common.errors import ConfigError, InputError
from incisive.common.fsio import atomic_write_bytes
from incisive.node.store import ObjectStore

FORMAT = "incisive-backup 1"
MANIFEST_FORMAT = "incisive-snapshot-1"
MANIFEST = "manifest.json"
VERIFIED = "verified.json"


def file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def new_snapshot_id(now: datetime | None = None) -> str:
    """Sortable by time (microseconds) and unique: ``20260303T083000.123456Z-ab12``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass
class Manifest:
    id: str
    created: str  # ISO 8601, UTC
    node_id: str
    provider: str
    catalogue: dict[str, str]  # {"dialect": ..., "file": ...}
    objects: dict[str, list[list[Any]]] = field(default_factory=dict)  # area -> [[digest, size], ...]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # relative path -> {"sha256", "size"}
    key_included: bool = False
    totals: dict[str, int] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.created)

    def object_sizes(self) -> dict[str, int]:
        return {d: int(s) for entries in self.objects.values() for d, s in entries}

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        if raw.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {raw.get('format')!r}")
        return cls(**raw)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "time": self.created, "objects": self.totals.get("objects", 0),
                "bytes": self.totals.get("bytes", 0), "catalogue": self.catalogue.get("dialect"),
                "keys": self.key_included}


class Repository:
    """A node's backup area on a mounted drive."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pool = ObjectStore(root)
        self.snapshots = root / "snapshots"

    @classmethod
    def for_node(cls, location: Path, node_id: str) -> Repository:
        return cls(location / "incisive" / node_id)

    @classmethod
    def find(cls, location: Path, node_id: str | None = None) -> Repository:
        """A repository at ``location`` itself, or the single (or named) node under ``location/incisive``."""
        if (location / "FORMAT").is_file():
            return cls(location)
        base = location / "incisive"
        nodes = sorted(p.name for p in base.iterdir() if (p / "FORMAT").is_file()) if base.is_dir() else []
        if node_id is not None:
            if node_id not in nodes:
                raise InputError(f"no backup of node {node_id!r} under {location}")
            return cls(base / node_id)
        if len(nodes) != 1:
            raise InputError(f"no backup under {location}" if not nodes
                             else f"backups of several nodes under {location} ({', '.join(nodes)}); give --node-id")
        return cls(base / nodes[0])

    def init(self) -> None:
        if not self.root.parent.parent.is_dir():
            raise ConfigError(f"backup location {self.root.parent.parent} is not available (is the drive mounted?)")
        self.pool.init()
        self.snapshots.mkdir(exist_ok=True)
        if not (self.root / "FORMAT").is_file():
            atomic_write_bytes(self.root / "FORMAT", (FORMAT + "\n").encode())

    @contextmanager
    def lock(self) -> Iterator[None]:
        with open(self.root / "lock", "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(f"another backup or prune is running on {self.root}") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def snapshot_dir(self, snapshot_id: str) -> Path:
        if "/" in snapshot_id or snapshot_id.startswith("."):
            raise InputError("invalid snapshot id")
        return self.snapshots / snapshot_id

    def snapshot_ids(self) -> list[str]:
        """Complete snapshots (those with a manifest), oldest first."""
        if not self.snapshots.is_dir():
            return []
        return sorted(p.name for p in self.snapshots.iterdir() if (p / MANIFEST).is_file())

    def load(self, snapshot_id: str) -> Manifest:
        return Manifest.from_json((self.snapshot_dir(snapshot_id) / MANIFEST).read_bytes())

    def manifests(self) -> list[Manifest]:
        return [self.load(i) for i in self.snapshot_ids()]

    def resolve(self, ref: str) -> str:
        """``latest``, a full id or a unique prefix."""
        ids = self.snapshot_ids()
        if not ids:
            raise InputError(f"no snapshot in {self.root}")
        if ref == "latest":
            return ids[-1]
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) != 1:
            raise InputError(f"no snapshot {ref!r}" if not matches else f"snapshot {ref!r} is ambiguous")
        return matches[0]

    def incomplete(self) -> list[Path]:
        if not self.snapshots.is_dir():
            return []
        return [p for p in self.snapshots.iterdir() if p.is_dir() and not (p / MANIFEST).is_file()]

    def clean_incomplete(self) -> int:
        """Remove what an interrupted run left (snapshot folders without manifest, partial copies)."""
        stale = self.incomplete()
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return len(stale) + self.pool.clean_tmp()

    def verified(self, snapshot_id: str) -> dict[str, Any] | None:
        path = self.snapshot_dir(snapshot_id) / VERIFIED
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        except (OSError, ValueError):
            return None

    def mark_verified(self, snapshot_id: str, record: dict[str, Any]) -> None:
        atomic_write_bytes(self.snapshot_dir(snapshot_id) / VERIFIED, json.dumps(record).encode())

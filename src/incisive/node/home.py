"""A node directory and the objects it opens (settings, pseudonymiser, store, quarantine, catalogue).

```
<node>/incisive.toml        settings (no secrets)
<node>/secrets/pseudonym.key per-provider HMAC key, mode 0600 — never leaves the node, never in a backup
<node>/store/objects/…      de-identified DICOM, content-addressed (sealed when settings.keyring is set:
                            node/crypt_store.py; the ring and master key live outside the node directory)
<node>/quarantine/objects/… de-identified instances held back (possible burned-in text)
<node>/catalogue.db         SQLite catalogue (unless catalogue_url points elsewhere)
<node>/logs/incisive.log    PHI-free log
```
The directory is created 0700 and ``incisive`` runs with umask 077, so every file in it is 0600 (catalogue.db
and SQLite's -wal/-shm, which take the database's mode, logs, audit, state); ``node check`` flags looser modes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from incisive.common.crypto import Pseudonymiser, generate_key, read_secret, write_secret
from incisive.common.errors import ConfigError
from incisive.common.fsio import atomic_write_text
from incisive.common.keyring import KeyRing, master_key
from incisive.common.logging import configure_node_logging, get_logger
from incisive.common.settings import CONFIG_NAME, NodeSettings
from incisive.node.catalogue import Catalogue
from incisive.node.crypt_store import EncryptedObjectStore
from incisive.node.store import ObjectStore

log = get_logger("node")


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:63] or "node"


@dataclass
class Node:
    settings: NodeSettings

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def key_path(self) -> Path:
        return self.home / "secrets" / "pseudonym.key"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @cached_property
    def keyring(self) -> KeyRing | None:
        """The data-key ring of an encrypted store (``settings.keyring``), opened at first use; None if plain.

        Its tenant id is the node id; the master key comes from ``settings.master_key`` (:class:`MasterKeyError`
        when it is missing or wrong).
        """
        if not self.settings.keyring:
            return None
        return KeyRing.open(Path(self.settings.keyring), self.settings.node_id, master_key(self.settings.master_key))

    def _object_store(self, name: str) -> ObjectStore:
        ring = self.keyring
        return ObjectStore(self.home / name) if ring is None else EncryptedObjectStore(self.home / name, ring)

    @cached_property
    def store(self) -> ObjectStore:
        return self._object_store("store")

    @cached_property
    def quarantine(self) -> ObjectStore:
        return self._object_store("quarantine")

    @cached_property
    def catalogue(self) -> Catalogue:
        return Catalogue(self.settings.effective_catalogue_url)

    @cached_property
    def pseudonymiser(self) -> Pseudonymiser:
        return Pseudonymiser(read_secret(self.key_path))

    @classmethod
    def open(cls, home: Path, check_schema: bool = True) -> Node:
        node = cls(NodeSettings.load(home))
        configure_node_logging(node.log_dir)
        if check_schema:
            node.catalogue.check_current()
        return node

    @classmethod
    def init(cls, home: Path, provider: str, node_id: str | None = None, catalogue_url: str = "") -> Node:
        """Create a node directory: settings, a fresh pseudonym key, store, quarantine and catalogue."""
        home = home.expanduser().resolve()
        if (home / CONFIG_NAME).exists():
            raise ConfigError(f"{home} is already an incisive node")
        if not provider.strip():
            raise ConfigError("--provider must not be empty")
        settings = NodeSettings(
            home=home, provider=provider.strip(), node_id=node_id or slugify(provider), catalogue_url=catalogue_url
        )
        node = cls(settings)
        created = not home.exists()
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.chmod(0o700)  # private whatever the umask or an existing directory's mode (node check: files.modes)
        try:
            node.catalogue.migrate()  # fail before writing secrets if the catalogue is unreachable
        except Exception:
            if created and not any(home.iterdir()):
                home.rmdir()
            raise
        write_secret(node.key_path, generate_key())
        node.store.init()
        node.quarantine.init()
        atomic_write_text(home / CONFIG_NAME, settings.to_toml())
        configure_node_logging(node.log_dir)
        log.info("node initialised: node_id=%s", settings.node_id)
        return node

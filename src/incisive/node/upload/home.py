"""An uploader directory at the provider: its settings, its pseudonym key and its journal.

```
<uploader>/uploader.toml            UploaderSettings (no secrets; INCISIVE_UPLOAD_<NAME> variables override it)
<uploader>/secrets/pseudonym.key    the provider's pseudonym key (32 random bytes, hex, 0600): never sent, never
                                    logged; losing it means new pseudonyms for the same patients (back it up offline)
<uploader>/journal.db               what the Central Node acknowledged, per source file (keyed digests only)
<uploader>/logs/incisive.log        PHI-free log
```
The directory is created 0700. De-identification options are the node's (``safe_private_tags``,
``quarantine_modalities``, ``sr_keep_text``, ``max_file_bytes``, same defaults); the Central Node tenant checks what
arrives with its own settings, so the two must agree on ``safe_private_tags`` and ``sr_keep_text``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from incisive.common.crypto import Pseudonymiser, generate_key, read_secret, write_secret
from incisive.common.errors import ConfigError
from incisive.common.fsio import atomic_write_text, toml_document
from incisive.common.logging import configure_node_logging, get_logger
from incisive.common.settings import NodeSettings, TomlSettings
from incisive.node.ingest.dicom_file import WorkerConfig

CONFIG_NAME = "uploader.toml"
UPLOADER_ENV = "INCISIVE_UPLOADER"
log = get_logger("upload")
_NODE = NodeSettings.model_fields


def _node_default(name: str) -> Any:
    field = _NODE[name]
    return field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]


class UploaderSettings(TomlSettings):
    """What an uploader needs: whose data it is, the de-identification options, how it sends."""

    model_config = SettingsConfigDict(env_prefix="INCISIVE_UPLOAD_", extra="ignore")

    provider: str = Field(description="Data provider (hospital) name")
    home: Path = Field(description="Uploader directory")
    safe_private_tags: list[str] = Field(default_factory=lambda: list(_node_default("safe_private_tags")),
                                         description=_NODE["safe_private_tags"].description)
    quarantine_modalities: list[str] = Field(default_factory=lambda: list(_node_default("quarantine_modalities")),
                                             description=_NODE["quarantine_modalities"].description)
    sr_keep_text: bool = Field(default=_node_default("sr_keep_text"), description=_NODE["sr_keep_text"].description)
    max_file_bytes: int = Field(default=_node_default("max_file_bytes"), gt=0,
                                description=_NODE["max_file_bytes"].description)
    workers: int = Field(default=0, ge=0, le=64, description="De-identification processes; 0 = one per core")
    batch_bytes: int = Field(default=8 << 20, ge=1024, le=1 << 30,
                             description="STOW-RS request size the uploader aims for (an instance larger goes alone)")
    retry_for_s: float = Field(default=300.0, ge=0, le=86400,
                               description="How long one request is retried (back-off) while the connection fails")

    @property
    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    def to_toml(self) -> str:
        return toml_document(self.model_dump(exclude={"home"}), "incisive uploader configuration; "
                             "INCISIVE_UPLOAD_<NAME> environment variables override it")


@dataclass
class Uploader:
    settings: UploaderSettings

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def key_path(self) -> Path:
        return self.home / "secrets" / "pseudonym.key"

    @property
    def journal_path(self) -> Path:
        return self.home / "journal.db"

    @cached_property
    def pseudonymiser(self) -> Pseudonymiser:
        return Pseudonymiser(read_secret(self.key_path))

    def worker_config(self) -> WorkerConfig:
        """The node's per-file worker with this provider's key and options (door: de-identify)."""
        s = self.settings
        return WorkerConfig(key=read_secret(self.key_path), safe_private=tuple(s.safe_private_tags),
                            quarantine_modalities=tuple(s.quarantine_modalities), sr_keep_text=s.sr_keep_text,
                            max_file_bytes=s.max_file_bytes)

    @classmethod
    def init(cls, home: Path, provider: str) -> Uploader:
        """A new uploader directory (0700) with a fresh pseudonym key (0600); refuses an existing one."""
        home = home.expanduser().resolve()
        if (home / CONFIG_NAME).exists():
            raise ConfigError(f"{home} is already an uploader directory")
        if not provider.strip():
            raise ConfigError("--provider must not be empty")
        settings = UploaderSettings(home=home, provider=provider.strip())
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.chmod(0o700)
        uploader = cls(settings)
        write_secret(uploader.key_path, generate_key())
        atomic_write_text(home / CONFIG_NAME, settings.to_toml())
        configure_node_logging(home / "logs")
        log.info("uploader initialised")
        return uploader

    @classmethod
    def open(cls, home: Path) -> Uploader:
        home = home.expanduser().resolve()
        path = home / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"{home} is not an uploader directory (no {CONFIG_NAME}); run 'incisive upload init'")
        uploader = cls(UploaderSettings.from_file(path, "uploader settings", home=home))
        read_secret(uploader.key_path)  # a clear error now rather than in a worker process
        configure_node_logging(home / "logs")
        return uploader


def resolve_home(home: Path | None) -> Path:
    """The uploader directory from the option, else ``$INCISIVE_UPLOADER``, else the current directory."""
    if home is not None:
        return home
    env = os.environ.get(UPLOADER_ENV)
    return Path(env) if env else Path.cwd()

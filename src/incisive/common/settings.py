"""Node settings: one pydantic-settings model, read from ``<node>/incisive.toml`` and ``INCISIVE_*`` variables.

Precedence (highest first): explicit arguments, environment (``INCISIVE_CATALOGUE_URL`` …), the TOML file,
defaults. Secrets are not settings: the pseudonym key lives in its own file (see :mod:`incisive.common.crypto`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from incisive.common.errors import ConfigError
from incisive.common.fsio import toml_document

CONFIG_NAME = "incisive.toml"
NODE_HOME_ENV = "INCISIVE_NODE"


class TomlSettings(BaseSettings):
    """Settings read from one TOML file and environment variables (environment wins over the file).

    Subclasses set ``model_config`` (their ``INCISIVE_*`` prefix) and call :meth:`from_file`.
    """

    _toml_path: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_path))
        return tuple(sources)

    @classmethod
    def from_file(cls, path: Path, what: str = "settings", **values: Any) -> Self:
        """Build from ``path`` (+ environment, + ``values``); a :class:`ConfigError` naming every bad field."""
        cls._toml_path = path
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid {what} in {path}: {problems}") from None
        finally:
            cls._toml_path = None


class NodeSettings(TomlSettings):
    """Everything a node needs to know about itself."""

    model_config = SettingsConfigDict(env_prefix="INCISIVE_", extra="ignore")

    provider: str = Field(description="Data provider (hospital) name")
    node_id: str = Field(description="Short identifier of this node, [a-z0-9-]")
    home: Path = Field(description="Node directory")
    catalogue_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite in the node directory")
    import_workers: int = Field(default=0, ge=0, le=64, description="0 = one per core")
    max_file_bytes: int = Field(default=2 * 1024**3, gt=0, description="Larger files are rejected on import")
    safe_private_tags: list[str] = Field(
        default_factory=list,
        description="Private attributes kept by de-identification, as 'CREATOR:gggg,xxee' (xx = block)",
    )
    quarantine_modalities: list[str] = Field(
        default_factory=lambda: ["US", "SC", "XC", "OT", "ES", "GM", "SM"],
        description="Modalities whose pixels often hold burned-in text; such instances go to quarantine",
    )
    sr_keep_text: bool = Field(
        False,
        description="keep SR TEXT content items through the descriptor cleaner instead of removing them "
                    "(Clean Structured Content option; off: free-text report items never reach the store)",
    )

    ae_title: str = Field(default="INCISIVE", min_length=1, max_length=16, description="Our DICOM AE title")
    listen_host: str = Field(default="127.0.0.1", description="Address the DICOM and HTTP services bind to")
    dicom_port: int = Field(default=11112, ge=0, le=65535, description="DICOM (DIMSE) port; 0 = any free port")
    http_port: int = Field(default=8042, ge=0, le=65535, description="HTTP API / DICOMweb port; 0 = any free port")
    allowed_aes: list[str] = Field(
        default_factory=list,
        description="Calling AE titles allowed to associate (C-ECHO/C-STORE/C-FIND); others are rejected",
    )
    max_pdu_bytes: int = Field(default=1 << 20, ge=4096, le=1 << 26, description="Largest DIMSE PDU accepted")
    # TLS (docs/dicom-network.md "TLS"); `node serve --dicom-tls-* / --tls-*` override these
    dicom_tls_cert: str = Field(default="", description="PEM certificate chain of the DICOM port; empty = no TLS")
    dicom_tls_key: str = Field(default="", description="PEM private key of dicom_tls_cert")
    dicom_tls_ca: str = Field(default="", description="CA bundle client certificates must chain to (required then)")
    tls_cert: str = Field(default="", description="PEM certificate chain of the HTTP API (DICOMweb over https)")
    tls_key: str = Field(default="", description="PEM private key of tls_cert")
    check_called_ae: bool = Field(True, description="Reject associations whose called AE title is not ae_title")
    dicom_max_associations: int = Field(32, ge=1, le=1024, description="Associations at once (known peers)")
    dicom_max_associations_per_peer: int = Field(8, ge=1, le=1024, description="Associations at once per address")
    dicom_max_connections: int = Field(256, ge=1, le=4096, description="Open DICOM TCP connections at once")
    dicom_max_connections_per_peer: int = Field(64, ge=1, le=4096, description="Open connections per address")
    dicom_acse_timeout_s: float = Field(5.0, gt=0, le=600, description="Seconds to wait for A-ASSOCIATE/RELEASE")
    dicom_dimse_timeout_s: float = Field(30.0, gt=0, le=3600, description="Seconds to wait for a DIMSE message")
    dicom_network_timeout_s: float = Field(30.0, gt=0, le=3600, description="Idle seconds before an abort")
    http_max_connections: int = Field(64, ge=1, le=4096, description="HTTP connections+tasks at once (503 beyond)")
    http_header_timeout_s: float = Field(10.0, gt=0, le=600, description="Seconds to send a request's headers")
    http_keep_alive_s: float = Field(5.0, gt=0, le=600, description="Idle keep-alive seconds between requests")
    stow_max_bytes: int = Field(256 << 20, ge=1024, description="Largest STOW-RS request body (413 beyond)")
    spool_threshold_bytes: int = Field(16 << 20, ge=0, description="Parts larger than this are spooled to disk")
    # A tenant of a Central Node (docs/central-node.md); empty on a provider's own node
    tenant_of: str = Field(default="", description="Central Node directory this node is a tenant of; empty = own node")
    keyring: str = Field(default="", description="Wrapped data-key ring of an encrypted store (outside the node "
                                                 "directory, never in a backup); empty = store not encrypted")
    master_key: str = Field(default="", description="Key that unwraps keyring: 'file:PATH' or 'passphrase:PATH'")
    door: Literal["deidentify", "verify"] = Field(
        default="deidentify", description="deidentify: pseudonymise what arrives (own node); verify: accept only "
                                          "instances the provider already de-identified (Central Node tenant)")
    quota_bytes: int = Field(default=0, ge=0, description="Most stored bytes (0 = no limit)")
    quota_instances: int = Field(default=0, ge=0, description="Most stored instances (0 = no limit)")

    @field_validator("node_id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
            raise ValueError("node_id must be lower-case letters, digits and '-' (max 63)")
        return value


    @property
    def effective_catalogue_url(self) -> str:
        return self.catalogue_url or f"sqlite:///{self.home / 'catalogue.db'}"

    @property
    def workers(self) -> int:
        return self.import_workers or (os.cpu_count() or 1)

    @classmethod
    def load(cls, home: Path, **overrides: Any) -> NodeSettings:
        """Read the node's settings; a clear :class:`ConfigError` when the node is missing or invalid."""
        home = home.expanduser().resolve()
        path = home / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"{home} is not an incisive node (no {CONFIG_NAME}); run 'incisive node init'")
        return cls.from_file(path, home=home, **overrides)

    def to_toml(self) -> str:
        """The persisted part of the settings (home is implied by the file's location)."""
        return toml_document(self.model_dump(exclude={"home"}),
                             "incisive node configuration; INCISIVE_<NAME> environment variables override it")


def resolve_home(home: Path | None) -> Path:
    """The node directory from the option, else ``$INCISIVE_NODE``, else the current directory."""
    if home is not None:
        return home
    env = os.environ.get(NODE_HOME_ENV)
    return Path(env) if env else Path.cwd()

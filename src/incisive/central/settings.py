"""A Central Node's settings: ``<central>/central.toml`` (no secrets) and ``INCISIVE_CENTRAL_*`` variables.

The same machinery as a node's (:class:`incisive.common.settings.TomlSettings`): environment over the file over
the defaults. ``country`` is an ISO 3166-1 alpha-2 code, checked here; whether it is inside the EU/EEA is the
residency check's question (:mod:`incisive.central.residency`); the codes and the EU/EEA set are in
:mod:`incisive.common.countries`. ``backup_locations`` records where each backup target of the tenants lives
(``{target name: country}``): a node's own backup configuration has no such field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from incisive.common.countries import ISO_COUNTRIES, check_country
from incisive.common.errors import ConfigError, InputError
from incisive.common.fsio import toml_document, toml_value
from incisive.common.settings import TomlSettings

CENTRAL_CONFIG = "central.toml"
CENTRAL_HOME_ENV = "INCISIVE_CENTRAL"

__all__ = ["CENTRAL_CONFIG", "CENTRAL_HOME_ENV", "ISO_COUNTRIES", "CentralSettings", "check_country",
           "resolve_central"]


class CentralSettings(TomlSettings):
    """Everything a Central Node knows about itself (the tenants are in ``tenants.json``)."""

    model_config = SettingsConfigDict(env_prefix="INCISIVE_CENTRAL_", extra="ignore")

    home: Path = Field(description="Central Node directory")
    name: str = Field(default="central", min_length=1, description="Name of this Central Node")
    provider: str = Field(min_length=1, description="Hosting provider (who runs the machine)")
    country: str = Field(description="Hosting country, ISO 3166-1 alpha-2")
    region: str = Field(default="", description="Hosting region or data centre")
    catalogue_url: str = Field(default="", description="Base PostgreSQL URL (one schema per tenant); "
                                                       "empty = one SQLite file per tenant")
    master_key: str = Field(description="The operator's master key: 'file:PATH' or 'passphrase:PATH'")
    transfer_scc: bool = Field(default=False, description="Standard contractual clauses signed (a hosting "
                                                          "country outside the EU/EEA needs them)")
    transfer_tia: str = Field(default="", description="Transfer impact assessment: a document inside the central "
                                                      "directory (path relative to it)")
    backup_locations: dict[str, str] = Field(default_factory=dict,
                                             description="Country of each backup target: {target name: code}")
    listen_host: str = Field(default="127.0.0.1", description="Address the DICOM and HTTP services bind to")
    http_port: int = Field(default=8043, ge=0, le=65535, description="HTTP port (DICOMweb, tenant API)")
    dicom_port: int = Field(default=11113, ge=0, le=65535, description="DICOM (DIMSE) port of every tenant")
    quota_bytes: int = Field(default=0, ge=0, description="Default quota of a new tenant in bytes (0 = none)")
    quota_instances: int = Field(default=0, ge=0, description="Default quota of a new tenant in instances")

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        try:
            return check_country(value, "country")
        except InputError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("backup_locations")
    @classmethod
    def _locations(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            return {str(k): check_country(v, f"backup_locations.{k}") for k, v in value.items()}
        except InputError as exc:
            raise ValueError(str(exc)) from None

    @classmethod
    def load(cls, home: Path) -> CentralSettings:
        """Read ``central.toml``; a clear :class:`ConfigError` when the directory is not a Central Node."""
        home = home.expanduser().resolve()
        path = home / CENTRAL_CONFIG
        if not path.is_file():
            raise ConfigError(f"{home} is not an incisive Central Node (no {CENTRAL_CONFIG}); "
                              "run 'incisive central init'")
        return cls.from_file(path, "central settings", home=home)

    def to_toml(self) -> str:
        """The persisted part (``home`` is implied by the file's place); ``backup_locations`` as an inline table."""
        data: dict[str, Any] = self.model_dump(exclude={"home", "backup_locations"})
        text = toml_document(data, "incisive Central Node configuration; INCISIVE_CENTRAL_<NAME> variables "
                                   "override it")
        pairs = ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in sorted(self.backup_locations.items()))
        return text + f"backup_locations = {{{pairs}}}\n"


def resolve_central(home: Path | None) -> Path:
    """The Central Node directory from the option, else ``$INCISIVE_CENTRAL``, else the current directory."""
    if home is not None:
        return home
    env = os.environ.get(CENTRAL_HOME_ENV)
    return Path(env) if env else Path.cwd()

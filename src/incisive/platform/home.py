"""A platform directory: ``platform.toml`` (settings, no secrets), ``platform.db`` (SQLite default), ``logs/``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from incisive.common.errors import ConfigError
from incisive.common.fsio import atomic_write_text
from incisive.platform.db import PlatformDb
from incisive.platform.settings import PLATFORM_CONFIG, PlatformSettings


@dataclass
class Platform:
    settings: PlatformSettings

    @property
    def home(self) -> Path:
        return self.settings.home

    @cached_property
    def db(self) -> PlatformDb:
        return PlatformDb(self.settings.effective_db_url)

    @classmethod
    def open(cls, home: Path, check_schema: bool = True) -> Platform:
        platform = cls(PlatformSettings.load(home))
        if check_schema:
            platform.db.check_current()
        return platform

    @classmethod
    def init(cls, home: Path, db_url: str = "") -> Platform:
        home = home.expanduser().resolve()
        if (home / PLATFORM_CONFIG).exists():
            raise ConfigError(f"{home} is already an incisive platform")
        settings = PlatformSettings(home=home, db_url=db_url, require_dp=True)  # new platforms: noisy counts
        platform = cls(settings)
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.chmod(0o700)  # private whatever the umask; files inside are 0600 under the CLI's umask 077
        platform.db.migrate()
        atomic_write_text(home / PLATFORM_CONFIG, settings.to_toml())
        return platform

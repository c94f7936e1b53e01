"""Backup targets and policy, kept in ``<node>/backup/targets.json`` (no secrets: restic passwords stay in a
file the data provider holds; only its path is recorded)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from incisive.common.errors import ConfigError, InputError
from incisive.common.fsio import atomic_write_text

CONFIG_FILE = Path("backup") / "targets.json"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass
class Target:
    name: str
    kind: str  # "dir" (mounted external/network drive) | "restic"
    location: str  # directory, or restic repository string
    password_file: str | None = None  # restic only; None = RESTIC_PASSWORD(_FILE) from the environment

    @property
    def label(self) -> str:
        return f"restic:{self.location}" if self.kind == "restic" else self.location


@dataclass
class Policy:
    every_days: int = 14  # the node specification: an exact replica every 2 weeks
    keep_last: int = 6
    keep_monthly: int = 12

    @property
    def stale_after_days(self) -> float:
        """A backup is stale one day past its interval (schedules check daily)."""
        return self.every_days + 1


@dataclass
class BackupConfig:
    targets: list[Target] = field(default_factory=list)
    policy: Policy = field(default_factory=Policy)

    def get(self, name: str | None) -> Target:
        if not self.targets:
            raise ConfigError("no backup target configured; run 'incisive backup target add NAME LOCATION'")
        if name is None:
            if len(self.targets) > 1:
                names = ", ".join(t.name for t in self.targets)
                raise InputError(f"several backup targets ({names}); name one")
            return self.targets[0]
        for target in self.targets:
            if target.name == name:
                return target
        raise InputError(f"no backup target named {name!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"targets": [asdict(t) for t in self.targets], "policy": asdict(self.policy)}


def parse_location(location: str, encrypt: bool) -> tuple[str, str]:
    """``restic:REPO`` (or any location with ``--encrypt``) → restic; else a directory."""
    if location.startswith("restic:"):
        return "restic", location[len("restic:"):]
    if encrypt:
        return "restic", location
    return "dir", str(Path(location).expanduser().resolve())


def load(home: Path) -> BackupConfig:
    path = home / CONFIG_FILE
    if not path.is_file():
        return BackupConfig()
    try:
        raw = json.loads(path.read_text())
        return BackupConfig([Target(**t) for t in raw.get("targets", [])], Policy(**raw.get("policy", {})))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid backup configuration in {path}: {exc}") from None


def save(home: Path, config: BackupConfig) -> None:
    path = home / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(config.as_dict(), indent=2) + "\n")


def add_target(home: Path, name: str, location: str, encrypt: bool = False,
               password_file: Path | None = None) -> Target:
    if not _NAME.fullmatch(name):
        raise InputError("target name must be lower-case letters, digits, '-' or '_' (max 32)")
    config = load(home)
    if any(t.name == name for t in config.targets):
        raise InputError(f"a backup target named {name!r} already exists")
    kind, where = parse_location(location, encrypt)
    if kind == "dir":
        if not Path(where).is_dir():
            raise InputError(f"{where} is not a directory (mount the drive first)")
        if Path(where).resolve().is_relative_to(home.resolve()):
            raise InputError("a backup target must not be inside the node directory")
    pw = str(password_file.expanduser().resolve()) if password_file else None
    if kind == "dir" and pw:
        raise InputError("--password-file is for restic targets")
    target = Target(name=name, kind=kind, location=where, password_file=pw)
    config.targets.append(target)
    save(home, config)
    return target


def remove_target(home: Path, name: str) -> None:
    config = load(home)
    config.get(name)
    config.targets = [t for t in config.targets if t.name != name]
    save(home, config)

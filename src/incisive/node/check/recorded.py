"""Replay a recorded machine: a directory of captured files and command outputs (used by the tests).

Layout of a recording directory::

    host.json            platform, hostname, disk usage, DNS/HTTP answers, NVML answer, command overrides,
                         file modes ({"modes": {"/abs/path": "0700"}}; a path not listed is missing)
    files/proc/cpuinfo   files, at their absolute path below files/
    cmd/lsblk.out        stdout of a command from COMMANDS (exit 0); ``cmd/<name>__<arg>.out`` with arguments

A command with neither an ``.out`` file nor an entry in ``host.json["commands"]`` is "not installed".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from incisive.node.check.system import COMMANDS, CommandResult, Probe


def command_key(name: str, *args: str) -> str:
    """File stem of a recorded command: the name, then each argument's last path part."""
    parts = [name, *(a.rstrip("/").rsplit("/", 1)[-1] for a in args)]
    return "__".join(parts)


class RecordedSystem:
    """A :class:`~incisive.node.check.system.System` backed by a recording directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        meta_path = root / "host.json"
        self.meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}

    def _file(self, path: str) -> Path:
        return self.root / "files" / path.lstrip("/")

    def platform(self) -> str:
        return str(self.meta.get("platform", "Linux"))

    def hostname(self) -> str:
        return str(self.meta.get("hostname", self.root.name))

    def read(self, path: str) -> str | None:
        target = self._file(path)
        return target.read_text() if target.is_file() else None

    def listdir(self, path: str) -> list[str] | None:
        target = self._file(path)
        return sorted(p.name for p in target.iterdir()) if target.is_dir() else None

    def exists(self, path: str) -> bool:
        return self._file(path).exists()

    def mode(self, path: str) -> int | None:
        value = self.meta.get("modes", {}).get(path)
        return None if value is None else int(str(value), 8)

    def run(self, name: str, *args: str) -> CommandResult:
        if name not in COMMANDS:
            raise KeyError(name)
        key = command_key(name, *args)
        override = self.meta.get("commands", {}).get(key)
        out_path = self.root / "cmd" / f"{key}.out"
        stdout = out_path.read_text() if out_path.is_file() else ""
        if override is not None:
            return CommandResult(
                name, override.get("rc"), override.get("stdout", stdout), override.get("stderr", ""),
                override.get("error"),
            )
        if out_path.is_file():
            return CommandResult(name, 0, stdout)
        return CommandResult(name, None, error=f"{COMMANDS[name][0]} not installed")

    def disk_usage(self, path: str) -> tuple[int, int] | None:
        usage = self.meta.get("disk_usage", {})
        probe = path
        while True:
            if probe in usage:
                total, free = usage[probe]
                return int(total), int(free)
            if probe in ("/", ""):
                return None
            probe = probe.rstrip("/").rsplit("/", 1)[0] or "/"

    def resolve(self, host: str) -> Probe:
        answer = self.meta.get("dns", {}).get(host)
        if answer is None:
            return Probe(True, "127.0.0.1") if host == "localhost" else Probe(False, f"no answer for {host}")
        return Probe(bool(answer.get("ok")), str(answer.get("detail", "")))

    def http_get(self, url: str) -> Probe:
        answer = self.meta.get("http", {}).get(url)
        if answer is None:
            return Probe(False, f"connection refused: {url}")
        return Probe(bool(answer.get("ok")), str(answer.get("detail", "")))

    def nvml(self) -> list[dict[str, Any]] | str:
        answer = self.meta.get("nvml", "NVML unavailable: NVML Shared Library Not Found")
        return answer if isinstance(answer, str) else list(answer)

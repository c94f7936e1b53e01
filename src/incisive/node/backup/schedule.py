"""``backup schedule``: a systemd timer + service (or a cron line) that runs the backup when it is due.

The timer fires daily (``Persistent=true`` catches up after downtime) and the command only backs up when the
newest snapshot is older than the interval (``--if-older``), so "every 14 days" survives reboots and a drive
that was unplugged on the due day.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from incisive.common.errors import InputError

UNIT = "incisive-backup"


def parse_interval(text: str) -> int:
    """``14d``, ``2w``, ``1d`` → days."""
    match = re.fullmatch(r"\s*(\d+)\s*([dw]?)\s*", text)
    if not match or int(match.group(1)) < 1:
        raise InputError("interval must look like 14d or 2w")
    return int(match.group(1)) * (7 if match.group(2) == "w" else 1)


def incisive_command() -> str:
    found = shutil.which("incisive")
    return found or f"{sys.executable} -m incisive"


@dataclass
class Schedule:
    home: Path
    every_days: int
    target: str | None = None
    user: str | None = None

    @property
    def command(self) -> str:
        args = [*shlex.split(incisive_command()), "backup", "run"]
        if self.target:
            args.append(self.target)
        args += ["--verify", "--if-older", f"{self.every_days}d", "--home", str(self.home)]
        return shlex.join(args)

    def service(self) -> str:
        user = f"User={self.user}\n" if self.user else ""
        return (f"[Unit]\nDescription=incisive node backup ({self.home})\nAfter=network-online.target local-fs.target\n"
                f"\n[Service]\nType=oneshot\n{user}Nice=10\nIOSchedulingClass=idle\nExecStart={self.command}\n")

    def timer(self) -> str:
        return (f"[Unit]\nDescription=incisive node backup every {self.every_days} days (checked daily)\n\n"
                "[Timer]\nOnCalendar=*-*-* 02:30:00\nRandomizedDelaySec=30min\nPersistent=true\n"
                f"Unit={UNIT}.service\n\n[Install]\nWantedBy=timers.target\n")

    def cron(self) -> str:
        log = shlex.quote(str(self.home / "logs" / "backup-cron.log"))
        return f"30 2 * * * {self.command} >> {log} 2>&1\n"

    def write(self, folder: Path, cron: bool = False) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        if cron:
            path = folder / f"{UNIT}.cron"
            path.write_text(f"# incisive backup, every {self.every_days} days (checked daily)\n" + self.cron())
            return [path]
        service, timer = folder / f"{UNIT}.service", folder / f"{UNIT}.timer"
        service.write_text(self.service())
        timer.write_text(self.timer())
        return [service, timer]

    def install_hint(self, paths: list[Path], cron: bool) -> str:
        if cron:
            return f"install with: (crontab -l; cat {shlex.quote(str(paths[0]))}) | crontab -"
        quoted = " ".join(shlex.quote(str(p)) for p in paths)
        return (f"install with: sudo cp {quoted} /etc/systemd/system/ && sudo systemctl daemon-reload && "
                f"sudo systemctl enable --now {UNIT}.timer")

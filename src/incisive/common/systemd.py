"""systemd units for incisive's long-running services, hardened, and their installation (node and platform).

One writer for both sides (:mod:`incisive.node.services`, :mod:`incisive.platform.services_units`): every
service runs as a dedicated unprivileged user (created by ``systemd-sysusers`` from a ``sysusers.d`` file), logs to
the journal, restarts on failure (not on a configuration error or a revoked agent: those need a person) and gets
the sandboxing ``systemd-analyze security`` scores: a read-only file system except the service's own directory
(``ProtectSystem=strict`` + ``ReadWritePaths``), no home directories, private ``/tmp`` and ``/dev``, no kernel
tunables/modules/logs/clock, no capabilities at all (``CAP_NET_BIND_SERVICE`` only when a port below 1024 is
configured), IPv4/IPv6/Unix sockets only, and the ``@system-service`` system-call set. What a service needs beyond
that is a named relaxation in :class:`Hardening`, so the reason stays next to the directive it loosens.

``install`` writes into ``<root>/etc/systemd/system`` (``root`` is ``/`` on a real machine, needing root) and enables
the units with ``systemctl``; with another ``root`` (tests, image builds) it uses ``systemctl --root`` and
``systemd-sysusers --root``, which need no running systemd.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from incisive.common.errors import ConfigError
from incisive.common.exit_codes import ExitCode

UNIT_DIR = Path("etc/systemd/system")
SYSUSERS_DIR = Path("etc/sysusers.d")
DEFAULT_USER = "incisive"
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_UNSAFE_PATH = re.compile(r"[\s\"'\\%$;]")


def incisive_executable() -> str:
    """The ``incisive`` script of the running installation (a venv's ``bin/incisive``), else ``python -m``."""
    beside = Path(sys.executable).parent / "incisive"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("incisive")
    return found or f"{sys.executable} -m incisive"


def check_user(user: str) -> str:
    if not _USER.fullmatch(user) or user == "root":
        raise ConfigError(f"service user {user!r} must be an unprivileged user name ([a-z_][a-z0-9_-]*, not root)")
    return user


def unit_path(path: Path) -> str:
    """A path as it may appear in a unit file; paths systemd would split or expand are refused."""
    text = str(path)
    if not path.is_absolute() or _UNSAFE_PATH.search(text):
        raise ConfigError(f"{text}: service paths must be absolute, without spaces, quotes, '%', '$' or ';'")
    return text


@dataclass(frozen=True)
class Hardening:
    """The sandbox of one service; each flag is a relaxation some service needs (and says why)."""

    rw_paths: tuple[Path, ...]
    low_port: bool = False  # binds a port < 1024: keeps CAP_NET_BIND_SERVICE (and so no private user namespace)
    jit: bool = False  # PyTorch's oneDNN kernels are generated at run time: writable+executable memory
    sandbox: bool = False  # the agent runs FL bundles under bubblewrap: namespaces, mounts, a delegated pids cgroup
    netlink: bool = False  # the readiness facts in the agent's heartbeat read interfaces over netlink (ip -j addr)
    devices: bool = False  # GPU training needs /dev/nvidia*

    def lines(self) -> list[str]:
        rw = " ".join(unit_path(p) for p in self.rw_paths)
        out = [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            f"ReadWritePaths={rw}",
            "PrivateTmp=yes",
            "ProtectHome=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectKernelLogs=yes",
            "ProtectClock=yes",
            "ProtectHostname=yes",
            "ProtectProc=invisible",
            "RestrictRealtime=yes",
            "RestrictSUIDSGID=yes",
            "LockPersonality=yes",
            "RemoveIPC=yes",
            "PrivateMounts=yes",
            "KeyringMode=private",
            "UMask=0077",
            "SystemCallArchitectures=native",
            "SystemCallErrorNumber=EPERM",
        ]
        if self.low_port:
            out += ["CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_BIND_SERVICE"]
        else:
            out += ["CapabilityBoundingSet=", "AmbientCapabilities=", "PrivateUsers=yes"]
        families = "AF_INET AF_INET6 AF_UNIX" + (" AF_NETLINK" if self.netlink else "")
        out.append(f"RestrictAddressFamilies={families}")
        if self.sandbox:  # bubblewrap: user/mount/pid/net namespaces, mount(2), its pids cgroup (sandbox/limits.py)
            out += ["SystemCallFilter=@system-service @mount sethostname",  # bwrap: pivot_root, mount, uts name
                    "SystemCallFilter=~@obsolete @raw-io @reboot @swap @module @clock @cpu-emulation @debug",
                    "Delegate=pids"]
        else:
            out += ["RestrictNamespaces=yes", "ProtectControlGroups=yes", "ProcSubset=pid",
                    "SystemCallFilter=@system-service", "SystemCallFilter=~@privileged @resources @obsolete"]
        if not self.jit:
            out.append("MemoryDenyWriteExecute=yes")
        if self.devices:
            out += ["PrivateDevices=no", "DevicePolicy=auto"]
        else:
            out += ["PrivateDevices=yes", "DevicePolicy=closed"]
        return out


@dataclass(frozen=True)
class Service:
    """One ``.service`` unit running an incisive command."""

    name: str  # without .service
    description: str
    argv: Sequence[str]
    user: str
    workdir: Path
    hardening: Hardening
    oneshot: bool = False
    after: tuple[str, ...] = ("network-online.target",)
    no_restart_codes: tuple[int, ...] = (ExitCode.INVALID,)
    environment: dict[str, str] = field(default_factory=dict)
    extra: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.name}.service"

    def render(self) -> str:
        after = " ".join(self.after)
        env = {"XDG_CACHE_HOME": str(self.workdir / "run" / "cache"), "MPLCONFIGDIR": str(self.workdir / "run" / "mpl"),
               "PYTHONUNBUFFERED": "1", **self.environment}
        lines = [
            "# written by incisive (install-services); review before changing: docs/deployment.md \"Services\"",
            "[Unit]", f"Description={self.description}", f"After={after}", f"Wants={after}", "",
            "[Service]", f"Type={'oneshot' if self.oneshot else 'exec'}", f"User={self.user}", f"Group={self.user}",
            f"WorkingDirectory={unit_path(self.workdir)}",
            *(f"Environment={k}={unit_path(Path(v)) if v.startswith('/') else v}" for k, v in env.items()),
            f"ExecStart={shlex.join(self.argv)}",
        ]
        if not self.oneshot:
            codes = " ".join(str(int(c)) for c in self.no_restart_codes)
            lines += ["Restart=on-failure", "RestartSec=5s", f"RestartPreventExitStatus={codes}",
                      "TimeoutStopSec=30s"]
        lines += ["StandardOutput=journal", "StandardError=journal", f"SyslogIdentifier={self.name}",
                  *self.extra, *self.hardening.lines()]
        if not self.oneshot:
            lines += ["", "[Install]", "WantedBy=multi-user.target"]
        return "\n".join(lines) + "\n"


def sysusers(user: str, what: str) -> str:
    """A ``sysusers.d`` line creating the system user (no login shell, no home) if it does not exist."""
    return f'# incisive service user\nu {check_user(user)} - "incisive {what}" - -\n'


@dataclass
class Installed:
    unit_dir: Path
    files: list[Path]
    enabled: list[str]
    notes: list[str]


def write(units: dict[str, str], folder: Path) -> list[Path]:
    """Write unit files (name -> text) into ``folder`` for review; nothing is enabled."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in units.items():
        path = folder / name
        path.write_text(text)
        paths.append(path)
    return paths


def _run(argv: list[str]) -> None:
    exe = shutil.which(argv[0], path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/bin", "/usr/sbin"]))
    if exe is None:
        raise ConfigError(f"{argv[0]} not found: installing services needs systemd")
    done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(f"{shlex.join(argv)} failed (exit {done.returncode}): {detail[-1] if detail else ''}")


def install(units: dict[str, str], enable: Sequence[str], user: str, what: str, owned: Sequence[Path],
            root: Path = Path("/")) -> Installed:
    """Install units under ``root``: the service user, the unit files, ``chown -R`` of ``owned``, enable.

    On the live system (``root`` = ``/``) this needs root; the units are enabled, not started."""
    live = root.resolve() == Path("/")
    if live and os.geteuid() != 0:
        raise ConfigError("installing services writes /etc/systemd/system and creates a system user: run it as root "
                          "(sudo), or use --write-to DIR to review the units first")
    unit_dir, users_dir = root / UNIT_DIR, root / SYSUSERS_DIR
    users_dir.mkdir(parents=True, exist_ok=True)
    users_file = users_dir / f"incisive-{check_user(user)}.conf"
    users_file.write_text(sysusers(user, what))
    _run(["systemd-sysusers", *([] if live else [f"--root={root}"]), str(users_file)])
    files = write(units, unit_dir)
    notes = [f"wrote {len(files)} units to {unit_dir}", f"service user {user} ({users_file})"]
    if live:
        for path in owned:
            _run(["chown", "-R", f"{user}:{user}", str(path)])
            notes.append(f"{path} now belongs to {user}")
    booted = live and Path("/run/systemd/system").is_dir()
    if booted:
        _run(["systemctl", "daemon-reload"])
    _run(["systemctl", *([] if booted else [f"--root={root}"]), "enable", *enable])
    notes.append(f"enabled {' '.join(enable)}" + ("" if booted else " (offline: systemd is not running here)"))
    if booted:
        notes.append(f"start them with: systemctl start {' '.join(enable)}")
    return Installed(unit_dir, files, list(enable), notes)

"""Access to the machine being checked, behind one small interface so tests can replay recordings.

Every collector reads the system only through :class:`System`: files (``/proc``, ``/sys``, ``/etc``),
named commands (argv fixed in :data:`COMMANDS`, run with a timeout and ``LC_ALL=C``), disk usage, DNS, an
HTTP probe and NVML. :class:`LiveSystem` is the real machine; :class:`~incisive.node.check.recorded.
RecordedSystem` replays a fixture directory. Nothing here raises for a missing tool or a permission problem:
the caller gets a reason to report as ``unknown``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import shutil
import socket
import stat
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

COMMAND_TIMEOUT_S = 3.0
PROBE_TIMEOUT_S = 2.0
EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")

COMMANDS: dict[str, tuple[str, ...]] = {
    "dmidecode-memory": ("dmidecode", "-t", "memory"),
    "lsblk": ("lsblk", "-J", "-b", "-o", "NAME,KNAME,TYPE,SIZE,ROTA,TRAN,MODEL,MOUNTPOINTS"),
    "nvidia-smi": (
        "nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap",
        "--format=csv,noheader,nounits",
    ),
    "modinfo-nvidia-signer": ("modinfo", "-F", "signer", "nvidia"),
    "mokutil-sb-state": ("mokutil", "--sb-state"),
    "systemd-detect-virt": ("systemd-detect-virt",),
    "ip-addr": ("ip", "-j", "addr"),
    "nft-ruleset": ("nft", "-j", "list", "ruleset"),
    "ufw-status": ("ufw", "status", "verbose"),
    "iptables-save": ("iptables-save",),
    "sshd-config": ("sshd", "-T"),
    "systemctl-is-active": ("systemctl", "is-active"),
    "systemctl-is-enabled": ("systemctl", "is-enabled"),
    "getent-passwd": ("getent", "passwd"),
    "docker-info": ("docker", "info", "--format", "{{json .}}"),
    "bwrap-probe": ("bwrap", "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop",
                    "ALL", "--die-with-parent", "--ro-bind", "/", "/", "/bin/true"),
    "mdadm-detail": ("mdadm", "--detail"),
    "zpool-status": ("zpool", "status", "-x"),
}


@dataclass(frozen=True)
class CommandResult:
    """Outcome of one command; ``error`` is set when it could not run at all (missing, denied, timed out)."""

    name: str
    rc: int | None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.rc == 0

    @property
    def missing(self) -> bool:
        """The program is not installed."""
        return self.rc is None and (self.error or "").endswith("not installed")

    @property
    def reason(self) -> str:
        """Why the command did not give a usable answer, in one line."""
        if self.error:
            return self.error
        first = (self.stderr or self.stdout).strip().splitlines()
        detail = f": {first[0][:160]}" if first else ""
        if self.rc != 0 and any(w in (self.stderr + self.stdout).lower() for w in _DENIED_WORDS):
            return f"{COMMANDS.get(self.name, (self.name,))[0]} needs root{detail}"
        return f"{COMMANDS.get(self.name, (self.name,))[0]} exited {self.rc}{detail}"


_DENIED_WORDS = ("permission denied", "operation not permitted", "need to be root", "must be root",
                 "/dev/mem", "are you root")


@dataclass(frozen=True)
class Probe:
    """Outcome of a network probe (DNS lookup, HTTP request)."""

    ok: bool
    detail: str


class System(Protocol):
    """What the collectors may ask of a machine."""

    def platform(self) -> str:
        """``platform.system()``: 'Linux', 'Windows', 'Darwin', …"""
        ...

    def hostname(self) -> str: ...

    def read(self, path: str) -> str | None:
        """Text of a file, or None when it is missing or unreadable."""
        ...

    def listdir(self, path: str) -> list[str] | None: ...

    def exists(self, path: str) -> bool: ...

    def mode(self, path: str) -> int | None:
        """Permission bits of a file or directory (not following a symlink), or None when it is missing."""
        ...

    def run(self, name: str, *args: str) -> CommandResult:
        """Run the command named in :data:`COMMANDS` with extra arguments."""
        ...

    def disk_usage(self, path: str) -> tuple[int, int] | None:
        """(total, free) bytes of the file system holding ``path`` (or its nearest existing parent)."""
        ...

    def resolve(self, host: str) -> Probe: ...

    def http_get(self, url: str) -> Probe: ...

    def nvml(self) -> list[dict[str, Any]] | str:
        """GPUs seen by NVML (name, memory_bytes, driver, compute_cap), or why NVML is unusable."""
        ...


class LiveSystem:
    """The machine this process runs on."""

    def __init__(self, command_timeout_s: float = COMMAND_TIMEOUT_S, probe_timeout_s: float = PROBE_TIMEOUT_S):
        self.command_timeout_s = command_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self._path = os.pathsep.join([os.environ.get("PATH", ""), *EXTRA_PATH])

    def platform(self) -> str:
        return platform.system()

    def hostname(self) -> str:
        return socket.gethostname()

    def read(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return None

    def listdir(self, path: str) -> list[str] | None:
        try:
            return sorted(os.listdir(path))
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def mode(self, path: str) -> int | None:
        try:
            return stat.S_IMODE(os.lstat(path).st_mode)
        except OSError:
            return None

    def run(self, name: str, *args: str) -> CommandResult:
        argv = [*COMMANDS[name], *args]
        exe = shutil.which(argv[0], path=self._path)
        if exe is None:
            return CommandResult(name, None, error=f"{argv[0]} not installed")
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PATH": self._path}
        try:
            done = subprocess.run(
                [exe, *argv[1:]], capture_output=True, text=True, timeout=self.command_timeout_s,
                env=env, stdin=subprocess.DEVNULL, check=False, errors="replace",
            )
        except subprocess.TimeoutExpired:
            return CommandResult(name, None, error=f"{argv[0]} timed out after {self.command_timeout_s:g} s")
        except OSError as exc:
            return CommandResult(name, None, error=f"{argv[0]} could not run: {exc.strerror or exc}")
        return CommandResult(name, done.returncode, done.stdout, done.stderr)

    def disk_usage(self, path: str) -> tuple[int, int] | None:
        probe = os.path.abspath(path)
        while not os.path.exists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)  # the volume the directory would be created on
        try:
            usage = shutil.disk_usage(probe)
        except OSError:
            return None
        return usage.total, usage.free

    def resolve(self, host: str) -> Probe:
        def lookup() -> str:
            infos = socket.getaddrinfo(host, 53, type=socket.SOCK_DGRAM)
            return ", ".join(sorted({str(i[4][0]) for i in infos})[:3])

        return _with_timeout(lookup, self.probe_timeout_s, f"resolving {host}")

    def http_get(self, url: str) -> Probe:
        if urlparse(url).scheme not in ("http", "https"):
            return Probe(False, f"not an http(s) URL: {url}")

        def get() -> str:
            headers = {"User-Agent": "incisive-node-check"}
            request = urllib.request.Request(url, method="GET", headers=headers)  # noqa: S310 - scheme checked
            try:
                with urllib.request.urlopen(request, timeout=self.probe_timeout_s) as resp:  # noqa: S310
                    return f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:  # the server answered: it is reachable
                return f"HTTP {exc.code}"

        return _with_timeout(get, self.probe_timeout_s + 0.5, f"reaching {url}")

    def nvml(self) -> list[dict[str, Any]] | str:
        try:
            nv: Any = importlib.import_module("pynvml")
        except ImportError:
            return "nvidia-ml-py not installed"
        try:
            nv.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, …
            return f"NVML unavailable: {exc}"
        try:
            driver = _text(nv.nvmlSystemGetDriverVersion())
            gpus: list[dict[str, Any]] = []
            for index in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                major, minor = nv.nvmlDeviceGetCudaComputeCapability(handle)
                gpus.append({
                    "name": _text(nv.nvmlDeviceGetName(handle)),
                    "memory_bytes": int(nv.nvmlDeviceGetMemoryInfo(handle).total),
                    "driver": driver,
                    "compute_cap": f"{major}.{minor}",
                })
            return gpus
        except Exception as exc:
            return f"NVML query failed: {exc}"
        finally:
            with contextlib.suppress(Exception):  # best effort
                nv.nvmlShutdown()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _with_timeout(func: Any, timeout_s: float, what: str) -> Probe:
    """Run a blocking probe in a daemon thread; give up (not wait) after ``timeout_s``."""
    box: dict[str, Probe] = {}

    def target() -> None:
        try:
            box["r"] = Probe(True, func())
        except Exception as exc:
            box["r"] = Probe(False, f"{type(exc).__name__}: {exc}"[:200])

    thread = threading.Thread(target=target, daemon=True, name="node-check-probe")
    thread.start()
    thread.join(timeout_s)
    return box.get("r", Probe(False, f"timed out after {timeout_s:g} s {what}"))

"""Real Flower processes: one ``flower-superlink`` (platform side) and one ``flower-supernode`` per node, which
dials out to it; jobs are submitted with ``flwr run`` against the SuperLink's control API.

With :class:`FlowerTls` the SuperLink serves TLS (``--ssl-ca-certfile/--ssl-certfile/--ssl-keyfile``) and runs
with ``--enable-supernode-auth``: a SuperNode is let in only when its EC public key was registered through the
SuperLink's Control API (``flwr supernode register``, :meth:`Federation.register_supernode`), and it signs every
Fleet request with the private key (``--auth-supernode-private-key``, :class:`SupernodeAuth`); it verifies the
SuperLink's certificate against ``--root-certificates``. Without it (``tls=None``: unit tests, benchmarks'
baseline) everything is ``--insecure``. Everything here binds 127.0.0.1 on free ports. Runtime dependency
installation is disabled: the FAB only names components of the installed ``incisive`` package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from incisive.common import tls as tlslib
from incisive.common.errors import IncisiveError
from incisive.common.exit_codes import ExitCode
from incisive.common.fsio import atomic_write_text, toml_document, toml_value
from incisive.federated.jobs import Job

APP_DIR = Path(__file__).parent / "app"
BIN = Path(sys.executable).parent


class FlowerError(IncisiveError):
    exit_code = ExitCode.FLOWER_FAILED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise FlowerError(f"timed out after {timeout:.0f}s waiting for {what}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)  # our own process group: the app subprocesses too
        except ProcessLookupError:
            return
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


RUNTIME_MODULE = "incisive.node.fl.runtime"  # what a node's Flower runtime runs (see supernode_argv)


@dataclass(frozen=True)
class FlowerTls:
    """The SuperLink's TLS certificate and key and the CA that issued it; SuperNode authentication goes with it."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def issue(cls, ca_dir: Path, out_dir: Path, names: list[str] | None = None) -> FlowerTls:
        """A SuperLink certificate from the CA in ``ca_dir`` (created on first use), for ``names`` + loopback."""
        ca = tlslib.ensure_ca(ca_dir)
        pair = tlslib.issue(ca, out_dir / "superlink.pem", out_dir / "superlink.key", list(names or []))
        return cls(pair.cert, pair.key, ca.cert)


@dataclass(frozen=True)
class SupernodeAuth:
    """How a SuperNode joins a TLS SuperLink: the CA it verifies the SuperLink with (None = the system store) and
    its Flower private key (OpenSSH EC, 0600, never leaves the node)."""

    root_certificates: Path | None
    private_key: Path | None  # None: Flower makes a throw-away key and asks to self-register (refused with auth)

    def argv(self) -> list[str]:
        roots = ["--root-certificates", str(self.root_certificates)] if self.root_certificates else []
        key = ["--auth-supernode-private-key", str(self.private_key)] if self.private_key else []
        return [*roots, *key]


def supernode_argv(superlink: str, node_dir: Path, auth: SupernodeAuth | None = None) -> list[str]:
    """The command line of one node's Flower runtime, dialling out to ``superlink`` (host:port).

    The one place SuperNode arguments are built: :class:`Federation` (launcher, tests) and the node agent use it.
    It is ``flower-supernode`` in ``--isolation process`` mode, run through :mod:`incisive.node.fl.runtime`,
    which also starts the node's warm ClientApp executor beside it (one process tree; stop it as a group).
    Without that executor every message would start a ``flwr-clientapp`` process that imports torch again.
    ``auth`` None: plaintext (``--insecure``), for loopback tests only."""
    link = auth.argv() if auth else ["--insecure"]
    return [sys.executable, "-m", RUNTIME_MODULE, *link, "--superlink", superlink,
            "--host", "127.0.0.1", "--port", str(free_port()), "--isolation", "process",
            "--node-config", f'node-dir="{node_dir.resolve()}"']


@dataclass
class Federation:
    """A SuperLink and its SuperNodes; use as a context manager so every process is stopped.

    The SuperLink keeps its state (runs, messages, objects) in memory, Flower's default: with ``--database FILE``
    Flower 1.42's SQLite link state and object store cost ~0.8 s per message phase on the 2-core machine (2.9 s
    vs 1.1 s per tabular round with 3 nodes and the node runtime's adaptive polls; 2.9 s also with the file on
    tmpfs: CPU, not disk). Nothing needs that
    state after a SuperLink restart: the job records live in the job directory, and the platform marks the jobs a
    restart interrupted failed. ``database`` (a file name in ``workdir``) brings the SQLite state back."""

    workdir: Path
    port: int = 0
    superlink: Proc | None = None
    supernodes: dict[str, Proc] = field(default_factory=dict)
    database: str = ""
    tls: FlowerTls | None = None
    flower_ids: dict[str, int] = field(default_factory=dict)  # SuperNodes registered here: name -> Flower node id

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flwr_home = self.workdir / "flwr-home"
        self.flwr_home.mkdir(exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(FLWR_HOME=str(self.flwr_home), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
                   PYTHONUNBUFFERED="1",
                   PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
        return env

    def _spawn(self, name: str, args: list[str]) -> Proc:
        log = self.workdir / f"{name}.log"
        fh = log.open("ab")
        popen = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
                                 start_new_session=True)
        fh.close()
        return Proc(name, popen, log)

    def start_superlink(self, timeout: float = 60) -> None:
        self.port = free_port()
        link = (["--ssl-ca-certfile", str(self.tls.ca), "--ssl-certfile", str(self.tls.cert), "--ssl-keyfile",
                 str(self.tls.key), "--enable-supernode-auth"] if self.tls else ["--insecure"])
        self.superlink = self._spawn("superlink", [
            str(BIN / "flower-superlink"), *link, "--host", "127.0.0.1", "--port", str(self.port),
            "--disable-runtime-dependency-installation",
            *(["--database", str(self.workdir / self.database)] if self.database else [])])
        wait_for(lambda: port_open(self.port) or not self._alive(self.superlink), timeout, "the SuperLink")
        if not self._alive(self.superlink):
            raise FlowerError(f"flower-superlink exited; see {self.superlink.log}")
        trust = f"root-certificates = {toml_value(str(self.tls.ca))}\n" if self.tls else "insecure = true\n"
        (self.flwr_home / "config.toml").write_text(
            '[superlink]\ndefault = "local"\n\n[superlink.local]\n'
            f'address = "127.0.0.1:{self.port}"\n{trust}')

    @staticmethod
    def _alive(proc: Proc | None) -> bool:
        return proc is not None and proc.alive()

    def start_supernode(self, name: str, node_dir: Path, auth: SupernodeAuth | None = None) -> Proc:
        """A SuperNode for one node directory; it dials out to the SuperLink (no inbound port at the node).

        On a TLS SuperLink without ``auth``, the SuperNode gets a new Flower key here, registered at once."""
        if not self.port:
            raise FlowerError("start the SuperLink first")
        if self.tls and auth is None:
            key = self.workdir / "supernode-keys" / f"{name}.key"
            self.flower_ids[name] = self.register_supernode(tlslib.new_flower_key(key), name)
            auth = SupernodeAuth(self.tls.ca, key)
        proc = self._spawn(f"supernode-{name}", supernode_argv(f"127.0.0.1:{self.port}", node_dir, auth))
        self.supernodes[name] = proc
        return proc

    def _flwr(self, *args: str, timeout: float = 60) -> dict[str, Any]:
        res = subprocess.run([str(BIN / "flwr"), *args, "--format", "json"], capture_output=True, env=self.env,
                             timeout=timeout, check=False)
        text = res.stdout.decode(errors="replace")
        start = text.find("{")
        try:
            data: dict[str, Any] = json.loads(text[start:]) if start >= 0 else {}
        except json.JSONDecodeError:
            data = {}
        if res.returncode != 0 or not data.get("success"):
            detail = str(data.get("error-message") or res.stderr.decode(errors="replace") or text)
            raise FlowerError(f"flwr {args[0]} {args[1] if len(args) > 1 else ''} failed: {detail[-300:]}")
        return data

    def register_supernode(self, public_key: str, name: str = "") -> int:
        """Register a SuperNode's OpenSSH EC public key with the SuperLink; returns Flower's node id."""
        path = self.workdir / "register.pub"
        atomic_write_text(path, tlslib.check_flower_public_key(public_key) + "\n")
        extra = ["--name", name] if name else []
        return int(self._flwr("supernode", "register", str(path), "local", *extra)["node-id"])

    def unregister_supernode(self, flower_node_id: int) -> None:
        """Remove a registered SuperNode: its next Fleet request is refused (401)."""
        self._flwr("supernode", "unregister", str(flower_node_id), "local")

    def registered_supernodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self._flwr("supernode", "list", "local")["nodes"]
        return nodes

    def stop_supernode(self, name: str) -> None:
        proc = self.supernodes.pop(name, None)
        if proc:
            proc.stop(grace=2)

    def submit(self, job: Job, run_config: dict[str, Any]) -> str:
        """``flwr run`` the incisive app with this job's run config; returns Flower's run id."""
        app = job.path / "app"
        if not app.exists():
            shutil.copytree(APP_DIR, app, ignore=shutil.ignore_patterns("__pycache__"))
        overrides = job.path / "run-config.toml"
        overrides.write_text(toml_document(run_config), encoding="utf-8")  # per run; not state
        res = subprocess.run([str(BIN / "flwr"), "run", str(app), "local", "--run-config", str(overrides),
                              "--format", "json"], capture_output=True, env=self.env, timeout=120, check=False)
        text = res.stdout.decode(errors="replace")
        start = text.find("{")
        try:
            data = json.loads(text[start:]) if start >= 0 else {}
        except json.JSONDecodeError:
            data = {}
        if res.returncode != 0 or not data.get("success"):
            raise FlowerError(f"flwr run failed: {(res.stderr or res.stdout).decode(errors='replace')[-500:]}")
        return str(data["run-id"])

    def stop(self) -> None:
        for name in list(self.supernodes):
            self.stop_supernode(name)
        if self.superlink:
            self.superlink.stop()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_job(job: Job, timeout: float, on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Poll the job's server state until the ServerApp reports it finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job.server_state()
        if on_progress:
            on_progress(state)
        if state.get("finished"):
            return state
        time.sleep(0.5)
    raise FlowerError(f"job {job.id} did not finish within {timeout:.0f}s")

"""The trusted side of a sandboxed job: start one worker process per job, send requests, check replies.

``Sandbox(bundle, inputs=…, scratch=…, limits=…)`` starts ``python -m incisive.federated.sandbox.child``
under bubblewrap (:func:`bwrap_argv`) — or, with ``mode="off"`` (the operator's audited opt-out), as a plain
subprocess with the same protocol, rlimits and cgroup but no namespaces — and waits for its hello (the bundle's
``task.py`` imported). :meth:`Sandbox.call` sends one request and returns the reply's (result, arrays), under
the per-call and per-job wall-clock limits; :meth:`Sandbox.close` kills the whole process tree.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

import incisive
from incisive.federated.sandbox import probe, wire
from incisive.federated.sandbox.limits import MB, Limits, PidsCgroup, apply_rlimits, process_bound
from incisive.federated.sandbox.paths import INPUTS_ENV, SCRATCH_ENV
from incisive.federated.sandbox.wire import OutputRejected, SandboxError

MODES = ("bwrap", "off")
CHILD = "incisive.federated.sandbox.child"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
BUILTIN_ERRORS = frozenset(n for n, v in vars(builtins).items() if isinstance(v, type)
                           and issubclass(v, BaseException)) | {"UnknownOp"}
START_SECONDS = 60  # at least this long for bwrap + python + the bundle's imports (torch), within wall_seconds
Expect = Callable[[dict[str, Any], dict[str, np.ndarray]], None]


def package_root() -> Path:
    """The directory that holds the ``incisive`` package (an editable install's ``src``)."""
    return Path(incisive.__file__).resolve().parent.parent


def python_dirs() -> list[Path]:
    """What the child's Python needs besides the system directories: its prefixes and incisive itself."""
    dirs = [Path(sys.base_prefix), Path(sys.prefix), package_root()]
    return [d for i, d in enumerate(dirs) if d not in dirs[:i] and not _under_system(d)]


def _under_system(path: Path) -> bool:
    return any(path == Path(s) or Path(s) in path.parents for s in SYSTEM_DIRS)


def bwrap_argv(bundle: Path, inputs: Path | None, scratch: Path, limits: Limits,
               env: Mapping[str, str]) -> list[str]:
    argv = [probe.BWRAP, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", "65534", "--gid", "65534", "--hostname", "sandbox"]
    for d in SYSTEM_DIRS:
        p = Path(d)
        if p.is_symlink():
            argv += ["--symlink", os.readlink(p), d]
        elif p.is_dir():
            argv += ["--ro-bind", d, d]
    # /tmp and /dev/shm are RAM (tmpfs pages count against no rlimit): each is bounded to file_size_mb;
    # the root and /dev tmpfs bwrap builds are made read-only below
    tmp_bytes = str(limits.file_size_mb * MB)
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", tmp_bytes, "--tmpfs", "/dev/shm",  # noqa: S108
             "--size", tmp_bytes, "--tmpfs", "/tmp",  # noqa: S108 - the sandbox's own tmpfs
             "--ro-bind", str(bundle), "/bundle", "--bind", str(scratch), "/scratch"]
    # after the tmpfs mounts, so an environment that lives under /tmp (a checkout in /tmp) is not covered by them
    for prefix in python_dirs():
        argv += ["--ro-bind", str(prefix), str(prefix)]
    if Path("/etc/ld.so.cache").exists():
        argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    if inputs is not None:
        argv += ["--ro-bind", str(inputs), "/in"]
    if limits.gpu:
        for dev in sorted(Path("/dev").glob("nvidia*")):
            argv += ["--dev-bind", str(dev), str(dev)]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--chdir", "/scratch", sys.executable, "-I", "-B", "-m", CHILD, "--bundle", "/bundle"]
    return argv


def child_env(inputs: str | None, scratch: str, extra: Mapping[str, str]) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1", SCRATCH_ENV: scratch,
           # no /etc/passwd inside: getpass.getuser() (MONAI calls it at import) reads these first; matplotlib
           # (pulled in by MONAI) keeps its font cache in scratch instead of an unwritable home
           "LOGNAME": "sandbox", "USER": "sandbox", "MPLCONFIGDIR": f"{scratch}/.matplotlib"}
    if inputs is not None:
        env[INPUTS_ENV] = inputs
    env.update({k: os.environ[k] for k in THREAD_VARS if k in os.environ})
    env.update(extra)
    return env


def check_forbidden(bound: Mapping[str, Path], forbidden: Sequence[Path]) -> None:
    """SandboxError when a bound path equals or contains a forbidden one (symlinks resolved)."""
    for label, path in bound.items():
        real = path.resolve()
        for f in forbidden:
            target = f.resolve()
            if target == real or real in target.parents:
                raise SandboxError(f"sandbox refused to start: the {label} directory {real} "
                                   f"would expose {target}")


def describe_exit(rc: int | None, limits: Limits) -> str:
    if rc is None:
        return "sandbox stopped answering"
    sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0
    if sig == signal.SIGXCPU:
        return f"killed: CPU-time limit {limits.cpu_seconds} s"
    if sig == signal.SIGXFSZ:
        return f"killed: file-size limit {limits.file_size_mb} MB"
    if sig > 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(sig).name}"
    return f"sandbox exited with status {rc}"


class Sandbox:
    """One persistent sandboxed worker per job; use as a context manager."""

    def __init__(self, bundle: Path, *, inputs: Path | None, scratch: Path, limits: Limits,
                 mode: str = "bwrap", forbidden: Sequence[Path] = (), log: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        if mode not in MODES:
            raise SandboxError(f"unknown sandbox mode {mode!r}; choose from {', '.join(MODES)}")
        self.bundle, self.inputs, self.scratch, self.limits = bundle, inputs, scratch, limits
        self.mode, self.forbidden, self.log, self.env = mode, list(forbidden), log, dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroup: PidsCgroup | None = None
        self.hello: dict[str, Any] = {}
        self._req = self._rep = -1
        self._deadline = 0.0
        self._log: IO[bytes] | None = None

    # lifecycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        bound = {"bundle": self.bundle, "scratch": self.scratch}
        if self.inputs is not None:
            bound["inputs"] = self.inputs
        if self.mode == "bwrap":
            bound.update({f"python ({d.name})": d for d in python_dirs()})
        check_forbidden(bound, self.forbidden)
        if self.mode == "bwrap":
            reason = probe.bwrap_unavailable()
            if reason:
                raise SandboxError(f"sandbox unavailable: {reason}")
        self.scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.scratch.chmod(0o700)
        self.cgroup = PidsCgroup.create(self.limits.processes)
        reason = process_bound(self.limits, self.cgroup)
        if reason and self.mode == "bwrap":
            raise SandboxError(f"sandbox unavailable: {reason}")
        if self.mode == "bwrap":
            argv = bwrap_argv(self.bundle.resolve(), self.inputs.resolve() if self.inputs else None,
                              self.scratch.resolve(), self.limits,
                              child_env("/in" if self.inputs else None, "/scratch", self.env))
            env, cwd = {"PATH": "/usr/bin:/bin"}, None
        else:
            argv = [sys.executable, "-I", "-B", "-m", CHILD, "--bundle", str(self.bundle.resolve())]
            env = child_env(str(self.inputs.resolve()) if self.inputs else None, str(self.scratch.resolve()),
                            self.env)
            cwd = str(self.scratch)
        self._spawn(argv, env, cwd)

    def _spawn(self, argv: list[str], env: dict[str, str], cwd: str | None) -> None:
        rlimits = self.limits.rlimits(as_root=os.geteuid() == 0)
        join = self.cgroup.join_fd() if self.cgroup else -1

        def preexec() -> None:  # in the forked child, before exec
            if join >= 0:
                os.write(join, str(os.getpid()).encode())
            apply_rlimits(rlimits)

        req_r, self._req = os.pipe()
        self._rep, rep_w = os.pipe()
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log, "ab")  # noqa: SIM115 - kept open for the job, closed in close()
            self._log.write(f"== sandbox start: mode {self.mode}, limits {self.limits}\n".encode())
            self._log.flush()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=req_r, stdout=rep_w, stderr=self._log or subprocess.DEVNULL, env=env, cwd=cwd,
                preexec_fn=preexec, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise SandboxError(f"sandbox unavailable: cannot start ({exc.strerror})") from None
        finally:
            os.close(req_r)
            os.close(rep_w)
            if join >= 0:
                os.close(join)
        fcntl.fcntl(self._req, fcntl.F_SETFL, fcntl.fcntl(self._req, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._deadline = time.monotonic() + self.limits.wall_seconds
        start_limit = max(START_SECONDS, self.limits.call_seconds)
        deadline, what = time.monotonic() + start_limit, f"start limit {start_limit} s"
        if deadline > self._deadline:
            deadline, what = self._deadline, f"wall-clock limit {self.limits.wall_seconds} s"
        header, _ = self._receive(deadline, what)
        if not header.get("ok"):
            raise SandboxError(f"bundle raised {self._error_name(header)} while importing task.py")
        hello = header.get("hello")
        self.hello = hello if isinstance(hello, dict) else {}

    def close(self) -> None:
        """Close the pipes, kill the whole process tree (cgroup members included), remove the cgroup."""
        for fd in (self._req, self._rep):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._req = self._rep = -1
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.kill()
            if self.cgroup is not None:
                self.cgroup.kill_all()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_all()
        self.close()

    # requests -------------------------------------------------------------------------------------------
    def call(self, op: str, args: dict[str, Any], arrays: Mapping[str, np.ndarray] | None = None, *,
             expect: Expect | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send one request; the reply's (result, arrays). See the module docstring for what raises."""
        if self.proc is None or self._req < 0:
            raise SandboxError("sandbox is not running")
        deadline, what = time.monotonic() + self.limits.call_seconds, f"call limit {self.limits.call_seconds} s"
        if deadline > self._deadline:
            deadline, what = self._deadline, f"wall-clock limit {self.limits.wall_seconds} s"
        self._send(wire.pack_frame({"op": op, "args": args}, arrays), deadline, what)
        header, out = self._receive(deadline, what)
        if not header.get("ok"):
            raise SandboxError(f"bundle raised {self._error_name(header)}")
        result = header.get("result")
        if not isinstance(result, dict):
            raise OutputRejected("malformed reply (result is not an object)")
        if expect is not None:
            try:
                expect(result, out)
            except OutputRejected:
                raise
            except Exception as exc:
                raise OutputRejected(str(exc) or type(exc).__name__) from None
        return result, out

    @staticmethod
    def _error_name(header: dict[str, Any]) -> str:
        name = header.get("error")
        return name if isinstance(name, str) and name in BUILTIN_ERRORS else "a non-built-in exception"

    def _wait(self, fd: int, deadline: float, what: str, write: bool = False) -> None:
        left = deadline - time.monotonic()
        ready = select.select([], [fd], [], max(left, 0))[1] if write else select.select([fd], [], [],
                                                                                          max(left, 0))[0]
        if not ready:
            self._kill()
            raise SandboxError(f"killed: {what}")

    def _send(self, data: bytes, deadline: float, what: str) -> None:
        view = memoryview(data)
        while view:
            self._wait(self._req, deadline, what, write=True)
            try:
                view = view[os.write(self._req, view[: 1 << 20]):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise self._gone() from None

    def _receive(self, deadline: float, what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        fd = self._rep
        try:
            return wire.read_frame(fd, self.limits.max_output_mb * MB, lambda: self._wait(fd, deadline, what))
        except wire.ChildGone:
            raise self._gone() from None
        except OutputRejected:
            self._kill()  # the stream is out of step: nothing more can be read from this worker
            raise

    def _gone(self) -> SandboxError:
        rc = None
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                rc = self.proc.wait(timeout=5)
        self._kill()
        return SandboxError(describe_exit(rc, self.limits))

"""Federated learning at the node's agent: ``fl-supernode`` and ``fl-stop`` jobs from the platform.

``fl-supernode`` (SuperLink address, bundle name/version/sha256, deadline): the node's policy must accept the job
type, requester and project; the bundle's sha256 must be approved here (``incisive node policy approve``); the
agent downloads the bundle's code from the platform (signed request) and re-hashes it before anything runs; then
it starts a ``flower-supernode`` process that dials out to the SuperLink with ``node-dir`` pointing at this node
(its catalogue and store), in the background, so that the agent keeps polling. The process is stopped on
``fl-stop``, after the job's deadline, or when the agent stops. Running SuperNodes are listed in
``agent/supernodes.json`` so that a restarted agent stops the ones it lost.

The link is TLS with SuperNode authentication: the SuperNode verifies the SuperLink's certificate against the CA
pinned at enrolment (``agent/superlink-ca.pem``, else the agent's ``ca_file``, else the system store) and signs
its requests with the node's Flower key (``secrets/flower-supernode.key``). A plaintext link is accepted only to
a SuperLink on this machine. The agent answers only once the SuperNode was let in (``SuperNode ID`` in its log)
or failed: a SuperLink that refuses the node's key, or a certificate the node does not trust, is the job's
answer, with the reason (:func:`startup_failure`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from incisive.common.fsio import atomic_write_text
from incisive.common.logging import get_logger
from incisive.common.protocol import Job, JobType, Result
from incisive.node.agent_link import AGENT_DIR, LinkError, SignedClient
from incisive.node.home import Node
from incisive.node.policy import load_policy

log = get_logger("agent.fl")
SHA256 = re.compile(r"[0-9a-f]{64}")
ADDRESS = re.compile(r"[A-Za-z0-9.\-\[\]:]{1,255}:\d{1,5}")
STARTUP_WATCH_S = 120.0  # the runtime imports torch before the SuperNode dials: slow on a loaded machine
ACTIVATED = "SuperNode ID:"


@dataclass
class Running:
    popen: subprocess.Popen[bytes]
    deadline: float

    def alive(self) -> bool:
        return self.popen.poll() is None


def fetch_bundle(client: SignedClient, name: str, version: str, dest: Path) -> str:
    """Download a bundle's code from the platform into ``dest``; returns the sha256 of the files received
    (re-hashed here: the platform's word alone is not trusted)."""
    from incisive.federated.archive import unpack
    from incisive.federated.bundle import bundle_digest

    data = client.request("GET", f"/agent/v1/models/{name}/{version}/bundle", timeout_s=60) or {}
    unpack(base64.b64decode(str(data.get("archive", ""))), dest)
    return bundle_digest(dest)


def ensure_bundle(node: Node, client: SignedClient, name: str, version: str, digest: str) -> str | None:
    """Download the bundle from the platform and check it is the approved one (``digest``); restore the node's
    approved copy from it when that copy is missing. None when all is well, else the reason to refuse."""
    from incisive.node.fl.approval import local_bundle_path, verified_local_bundle

    with tempfile.TemporaryDirectory(prefix="incisive-bundle-") as tmp:
        received = fetch_bundle(client, name, version, Path(tmp) / "bundle")
        if received != digest:
            return "the bundle received does not match the approved sha256"
        if verified_local_bundle(node.home, name, version, digest) is None:  # approved copy missing
            target = local_bundle_path(node.home, name, version)
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(Path(tmp) / "bundle", target)
    return None


class Supernodes:
    """The SuperNodes this agent runs, by platform FL job id."""

    def __init__(self, node: Node, client: SignedClient) -> None:
        self.node, self.client = node, client
        self.running: dict[str, Running] = {}
        self.lock = threading.Lock()
        self.state_file = node.home / AGENT_DIR / "supernodes.json"
        self._reap_orphans()

    def run(self, job: Job) -> Result:
        """The agent's handler for ``fl-supernode`` and ``fl-stop`` jobs."""
        payload = job.payload
        if job.type == JobType.FL_STOP:
            stopped = self.stop(str(payload.get("fl_job", "")))
            return Result.ok({"stopped": stopped})
        try:
            return self._start(payload)
        except LinkError as exc:
            return Result.failed(f"bundle download failed ({exc.status or 'unreachable'})")
        except Exception as exc:  # never ship a traceback
            log.exception("fl-supernode job failed")
            return Result.failed(f"could not start the SuperNode ({type(exc).__name__})")

    def _start(self, payload: dict[str, Any]) -> Result:
        from incisive.federated.bundle import NAME_RE, VERSION_RE
        from incisive.node.fl.approval import is_approved

        fl_job, address = str(payload.get("fl_job", "")), str(payload.get("superlink", ""))
        name, version, digest = (str(payload.get(k, "")) for k in ("model", "version", "sha256"))
        if not (NAME_RE.match(name) and VERSION_RE.match(version) and SHA256.fullmatch(digest)
                and ADDRESS.fullmatch(address) and re.fullmatch(r"[A-Za-z0-9-]{1,32}", fl_job)):
            return Result.failed("invalid fl-supernode job")
        reason = load_policy(self.node.home).decide(JobType.FL_SUPERNODE.value,
                                                    str(payload.get("requester", "")), payload.get("project"))
        if reason is not None:
            return Result.refused(reason)
        if not is_approved(self.node.home, name, version, digest):
            return Result.refused(f"bundle {name}:{version} ({digest[:12]}) is not approved at this node")
        from incisive.node.fl.sandboxed import refusal

        caged = refusal(self.node)  # no sandbox, no third-party code (unless the operator opted out)
        if caged is not None:
            return Result.refused(caged)
        problem = ensure_bundle(self.node, self.client, name, version, digest)
        if problem is not None:
            return Result.refused(problem)
        auth, problem = self._link(address, payload.get("tls", True) is not False)
        if problem is not None:
            return Result.refused(problem)
        deadline = float(payload.get("deadline") or time.time() + 6 * 3600)
        log_path = self.node.home / "fl-runtime" / fl_job / "supernode.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        with self.lock:
            current = self.running.get(fl_job)
            fresh = current is None or not current.alive()
            if fresh:
                self.running[fl_job] = current = Running(self._spawn(fl_job, address, auth), deadline)
            self._save()
        assert current is not None
        failure = startup_failure(current.popen, log_path, offset) if fresh else None
        if failure is not None:
            self.stop(fl_job)
            log.warning("SuperNode for FL job %s failed to join: %s", fl_job, failure)
            return Result.failed(failure)
        log.info("SuperNode started for FL job %s", fl_job)
        return Result.ok({"supernode": "started", "sha256": digest, "tls": auth is not None})

    def _link(self, address: str, secure: bool) -> tuple[Any, str | None]:
        """The SuperNode's TLS and authentication settings, or why this node will not dial ``address``."""
        from incisive.common.tls import is_loopback_host
        from incisive.federated.deploy import SupernodeAuth
        from incisive.node.agent_link import flower_key_path, superlink_ca_path

        if not secure:
            if is_loopback_host(address.rpartition(":")[0]):
                return None, None
            return None, "refusing a plaintext Flower link to a SuperLink on another machine (TLS required)"
        key = flower_key_path(self.node.home)
        if not key.exists():
            return None, "this node has no Flower key (secrets/flower-supernode.key); enrol it again"
        pinned = superlink_ca_path(self.node.home)
        ca = self.client.settings.ca_file
        roots = pinned if pinned.exists() else (Path(ca) if ca else None)
        return SupernodeAuth(roots, key), None

    def _spawn(self, fl_job: str, address: str, auth: Any = None) -> subprocess.Popen[bytes]:
        from incisive.federated.deploy import Federation, supernode_argv

        workdir = self.node.home / "fl-runtime" / fl_job
        env = Federation(workdir).env
        with (workdir / "supernode.log").open("ab") as fh:
            return subprocess.Popen(supernode_argv(address, self.node.home, auth), stdout=fh,
                                    stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)

    def stop(self, fl_job: str) -> bool:
        with self.lock:
            running = self.running.pop(fl_job, None)
            self._save()
        if running is None:
            return False
        _terminate(running.popen.pid, running.popen)
        log.info("SuperNode stopped for FL job %s", fl_job)
        return True

    def reap(self) -> None:
        """Stop SuperNodes past their deadline; forget those that exited."""
        now = time.time()
        with self.lock:
            ended = [j for j, r in self.running.items() if r.deadline < now or not r.alive()]
        for fl_job in ended:
            self.stop(fl_job)

    def watch(self, stop_event: threading.Event, interval: float = 5.0) -> None:
        while not stop_event.wait(interval):
            self.reap()

    def stop_all(self) -> None:
        for fl_job in list(self.running):
            self.stop(fl_job)

    def _save(self) -> None:
        data = {j: {"pid": r.popen.pid, "deadline": r.deadline} for j, r in self.running.items()}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.state_file, json.dumps(data))

    def _reap_orphans(self) -> None:
        """SuperNodes a previous agent process started and lost (it crashed): stop them (only a process that
        still runs the node runtime: the pid may have been reused by something else)."""
        from incisive.federated.deploy import RUNTIME_MODULE

        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        for entry in data.values():
            pid = int(entry.get("pid", 0))
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if RUNTIME_MODULE.encode() in cmdline:
                _terminate(pid, None)
        self._save()


def startup_failure(popen: subprocess.Popen[bytes], log_path: Path, offset: int,
                    timeout_s: float = STARTUP_WATCH_S) -> str | None:
    """Wait until the SuperNode is let in by the SuperLink (None) or fails (the reason, PHI-free: certificate and
    Flower error codes only). Still neither after ``timeout_s``: None (the platform's start timeout decides)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = _log_since(log_path, offset)
        if ACTIVATED in text:
            return None
        if "Exit Code:" in text or popen.poll() is not None:  # Flower gave up: its message follows the code
            time.sleep(0.5)
            reason = _failure_reason(_log_since(log_path, offset))
            return reason or f"the SuperNode exited (code {popen.poll()}) before joining the SuperLink"
        time.sleep(0.2)
    return None


def _log_since(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(1 << 20).decode(errors="replace")
    except OSError:
        return ""


def _failure_reason(text: str) -> str | None:
    if "CERTIFICATE_VERIFY_FAILED" in text:
        detail = text.split("certificate verify failed:", 1)[-1].split("(_ssl", 1)[0].strip()[:120]
        return f"the SuperLink's TLS certificate is not trusted by this node ({detail})"
    if "SSL/TLS handshake error" in text or "WRONG_VERSION_NUMBER" in text:
        return "TLS handshake with the SuperLink failed"
    if "Failed to activate SuperNode" in text or "[code: 2004]" in text:
        return "the SuperLink refused this SuperNode: its Flower key is not registered there (Flower error 2004)"
    if "[code: 2001]" in text:
        return "the SuperLink admits registered SuperNode keys only (Flower error 2001: self-registration refused)"
    if "Invalid SuperNode authentication" in text or " 401" in text:
        return "the SuperLink refused this SuperNode's authentication (401)"
    if "Exit Code:" in text:
        code = text.split("Exit Code:", 1)[1].split()[0] if text.split("Exit Code:", 1)[1].split() else "?"
        return f"the SuperNode could not join the SuperLink (Flower exit code {code})"
    return None


def _terminate(pid: int, popen: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM the SuperNode's process group (its ClientApp processes too), SIGKILL after ``grace``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None:
            return
        if popen is None and not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    if popen is not None:
        popen.wait(5)

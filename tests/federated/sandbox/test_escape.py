"""Hostile bundles against the cage: secrets, other jobs, writes, network, processes, memory, time.

Each test runs a fixture bundle under bubblewrap, reads what every attempt got from the node-local log, records
it in the matrix (printed at the end of the run) and checks that the runner stays usable afterwards.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from incisive.federated.sandbox import Limits, SandboxError
from tests.federated.sandbox.conftest import SMALL, SandboxFactory, attempts, record


class Listener:
    """A TCP listener on 127.0.0.1 (free port) that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.stop()


def escape_targets(node: Path, tmp_path: Path, port: int) -> dict[str, object]:
    other = tmp_path / "jobs" / "job-0" / "scratch"
    other.mkdir(parents=True)
    (other / "weights.npz").write_bytes(b"another job's data")
    return {
        "read": {"secrets/pseudonym.key": str(node / "secrets" / "pseudonym.key"),
                 "secrets/agent.key": str(node / "secrets" / "agent.key"),
                 "catalogue.db": str(node / "catalogue.db"),
                 "store object": str(next((node / "store").rglob("ab0*"))),
                 "/etc/shadow": "/etc/shadow", "/etc/passwd": "/etc/passwd",
                 "another job's scratch": str(other / "weights.npz")},
        "list": {"node directory": str(node), "/root": "/root"},
        "write": {"node secrets/": str(node / "secrets" / "owned"), "host /tmp": str(tmp_path / "owned"),
                  "/bundle": "/bundle/owned", "/usr": "/usr/owned", "/": "/owned", "/etc": "/etc/owned",
                  "/dev": "/dev/owned", "/scratch": "/scratch/ok"},
        "port": port,
        "fill_mb": 2 * SMALL.file_size_mb,
    }


def test_escape_attempts_all_fail(make_sandbox: SandboxFactory, node_dir: Path, tmp_path: Path,
                                  listener: Listener) -> None:
    targets = escape_targets(node_dir, tmp_path, listener.port)
    with make_sandbox("escape", env={"ESCAPE_TARGETS": json.dumps(targets)}) as box:
        assert box.call("state", {}) == ({"names": []}, {})
    got = attempts(box.log)  # type: ignore[arg-type]
    for what, outcome in got.items():
        record("escape", what, outcome)
    for label in targets["read"]:  # type: ignore[attr-defined]
        assert got[f"read {label}"] == "FileNotFoundError(ENOENT)", label
    assert got["list node directory"] == "FileNotFoundError(ENOENT)"
    # /root holds at most the skeleton of the path to a Python under it (pyenv's /root/.pyenv/versions/…)
    assert got["list /root"] in {"FileNotFoundError(ENOENT)", "SUCCEEDED 1 entries"}
    assert got["write node secrets/"].startswith(("FileNotFoundError", "OSError", "PermissionError"))
    assert got["write host /tmp"] == "FileNotFoundError(ENOENT)"
    for place in ("/bundle", "/usr", "/", "/etc", "/dev"):
        assert got[f"write {place}"] == "OSError(EROFS)", place
    for place in ("/tmp", "/dev/shm"):  # RAM-backed: bounded to file_size_mb (64 MB), written in 8 MB files
        outcome = got[f"fill {place} with {2 * SMALL.file_size_mb} MB"]
        assert outcome.startswith("OSError(ENOSPC) after "), place
        assert int(outcome.split()[-2]) <= SMALL.file_size_mb, place
    assert got["write /scratch"] == "SUCCEEDED written"  # the probe works: the one writable place
    assert (tmp_path / "jobs" / "job-1" / "scratch" / "ok").read_text() == "owned\n"
    assert not (node_dir / "secrets" / "owned").exists() and not (tmp_path / "owned").exists()
    assert got[f"connect 127.0.0.1:{listener.port}"] == "ConnectionRefusedError(ECONNREFUSED)"
    assert got["resolve example.org"].startswith("gaierror")
    time.sleep(0.5)
    assert listener.accepted == 0, "the listener saw a connection from inside the sandbox"
    assert got["see host processes in /proc"] in {"SUCCEEDED 1 pids", "SUCCEEDED 2 pids", "SUCCEEDED 3 pids"}
    assert got["uid"] == "SUCCEEDED 65534"
    assert got["capabilities"] == "SUCCEEDED 0000000000000000"
    assert got["no_new_privs"] == "SUCCEEDED 1"


def test_mode_off_is_no_cage(make_sandbox: SandboxFactory, node_dir: Path, tmp_path: Path,
                             listener: Listener) -> None:
    """The operator's opt-out runs the same protocol without namespaces: the same probes then succeed (which
    also shows that the escape test above can fail)."""
    targets = {**escape_targets(node_dir, tmp_path, listener.port), "fill_mb": 0}  # no RAM filling uncaged
    with make_sandbox("escape", env={"ESCAPE_TARGETS": json.dumps(targets)}, mode="off") as box:
        assert box.call("state", {}) == ({"names": []}, {})
    got = attempts(box.log)  # type: ignore[arg-type]
    record("escape (off)", "read secrets/pseudonym.key", got["read secrets/pseudonym.key"])
    record("escape (off)", f"connect 127.0.0.1:{listener.port}", got[f"connect 127.0.0.1:{listener.port}"])
    assert got["read secrets/pseudonym.key"] == "SUCCEEDED 32 bytes"
    assert got[f"connect 127.0.0.1:{listener.port}"] == "SUCCEEDED connected"
    deadline = time.monotonic() + 10
    while listener.accepted == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listener.accepted == 1


def test_fork_bomb_is_bounded(make_sandbox: SandboxFactory) -> None:
    box = make_sandbox("forkbomb", env={"FORKS": "10000"})
    with box:
        box.call("state", {})
        group = box.cgroup.path if box.cgroup else None
        members = len(box.cgroup.pids()) if box.cgroup else 0
    outcome = attempts(box.log)["fork 10000 processes"]  # type: ignore[arg-type]
    record("forkbomb", f"fork 10000 processes (pids.max {SMALL.processes})", outcome)
    assert outcome.startswith("BlockingIOError(EAGAIN) after ")
    assert int(outcome.rsplit(" ", 1)[1]) < SMALL.processes
    assert group is not None and 0 < members <= SMALL.processes
    assert not group.exists(), "the job's cgroup (and every sleeping child in it) outlived close()"


def test_allocating_20_gib_fails(make_sandbox: SandboxFactory) -> None:
    with make_sandbox("hog") as box, pytest.raises(SandboxError) as err:
        box.call("state", {})
    record("hog", f"allocate 20 GiB (address space {SMALL.address_space_mb} MB)", str(err.value))
    assert str(err.value) == "bundle raised MemoryError"


@pytest.mark.parametrize(("limits", "message"), [
    (Limits(call_seconds=3, wall_seconds=300, address_space_mb=2048), "killed: call limit 3 s"),
    (Limits(call_seconds=300, wall_seconds=8, address_space_mb=2048), "killed: wall-clock limit 8 s"),
    (Limits(call_seconds=300, wall_seconds=300, cpu_seconds=2, address_space_mb=2048),
     "killed: CPU-time limit 2 s"),
], ids=["call", "wall", "cpu"])
def test_spinning_forever_is_killed(make_sandbox: SandboxFactory, limits: Limits, message: str) -> None:
    box = make_sandbox("spin", limits=limits)
    with box:
        started = time.monotonic()
        with pytest.raises(SandboxError) as err:
            box.call("state", {})
        took = time.monotonic() - started
        record("spin", f"spin forever ({message.split(': ')[1]})", f"{err.value} after {took:.1f} s")
        assert str(err.value) == message
        assert box.proc is not None and box.proc.poll() is not None
        with pytest.raises(SandboxError, match="not running"):
            box.call("ping", {})
    with make_sandbox("chatty", job="job-2") as again:  # the runner stays usable
        assert again.call("ping", {})[0]["pong"] is True

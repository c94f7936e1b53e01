"""Durability proven by order, from a system-call trace: ``node serve`` runs under ``strace -f``, dcmtk's
``storescu`` sends N instances and STOW-RS posts M, and for every acknowledged instance the trace must show, before
the first byte of its response on the socket (the C-STORE-RSP naming its SOP Instance UID / the HTTP response):

* the ``fsync`` of its object file (the fd's path is the object's content address),
* the ``fsync`` of the object's shard directory, after the file's,
* the catalogue's commit, after both: with the SQLite catalogue (WAL, ``synchronous=NORMAL``, see
  ``common/db.py``) that is the commit's write to ``catalogue.db-wal`` — the WAL itself is fsynced at checkpoint,
  by design, so a power cut can lose the last rows but never acknowledge an object that is not on disk (fsck
  re-catalogues such orphans).

``test_durability.py``'s kill -9 test stays as the second line (it proves survival, this one proves the order).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import select

from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.node.api.tokens import create_token
from incisive.node.backup import config
from incisive.node.catalogue.models import Instance
from incisive.node.home import Node
from tests.node.backup.helpers import import_cohort
from tests.node.net.conftest import NODELAY
from tests.node.net.test_durability import parse_acknowledged
from tests.node.serve_process import start_node_serve

TIMEOUT = 240
SYSCALLS = "fsync,fdatasync,write,pwrite64,sendto,sendmsg,openat,rename,renameat2"  # SQLite writes with pwrite64
# 12345 13:55:01.123456 fsync(7</node/objects/ab/cd/abcd…>) = 0   (also "<unfinished ...>" / "<... fsync resumed>")
LINE = re.compile(r"^(\d+)\s+(\d\d):(\d\d):(\d\d\.\d+)\s+(.*)$")
CALL = re.compile(r"^(\w+)\((\d+)<((?:->|[^>])*)>(.*)$")  # a socket path holds "->"
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")


@dataclass
class Event:
    t: float
    call: str
    fd: int
    path: str  # the fd's path as strace -yy shows it (a file, or TCP:[local->peer] for a socket)
    data: str  # the rest of the line: the bytes written (escaped), the result


@dataclass
class Trace:
    events: list[Event] = field(default_factory=list)

    def syncs(self, path: str) -> list[float]:
        """Completion times of fsync/fdatasync calls on ``path`` that returned 0."""
        return [e.t for e in self.events if e.call in ("fsync", "fdatasync") and e.path == path
                and e.data.rstrip().endswith("= 0")]

    def sends(self, port: int) -> list[Event]:
        """Writes on the server side of connections to ``port`` (socket paths read TCP:[127.0.0.1:PORT->…])."""
        mark = f"TCP:[127.0.0.1:{port}->"
        return [e for e in self.events if e.call in ("write", "sendto", "sendmsg") and e.path.startswith(mark)]

    def writes(self, suffix: str) -> list[float]:
        return [e.t for e in self.events if e.call in ("write", "pwrite64") and e.path.endswith(suffix)]


def parse_trace(text: str) -> Trace:
    """strace -f -tt -yy output as events; a call split by another process's line keeps the time it started for
    writes (the bytes may leave from then on) and the time it finished for syncs (durable only from then on)."""
    trace, pending = Trace(), {}
    for raw in text.splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        pid, rest = m.group(1), m.group(5)
        t = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + float(m.group(4))
        resumed = RESUMED.match(rest)
        if resumed:
            start = pending.pop((pid, resumed.group(1)), None)
            if start is None:
                continue
            start_t, call, fd, path, data = start
            trace.events.append(Event(t if call in ("fsync", "fdatasync") else start_t, call, fd, path,
                                      data + resumed.group(2)))
            continue
        c = CALL.match(rest)
        if not c:
            continue
        call, fd, path, data = c.group(1), int(c.group(2)), c.group(3), c.group(4)
        if data.endswith("<unfinished ...>"):
            pending[(pid, call)] = (t, call, fd, path, data)
        else:
            trace.events.append(Event(t, call, fd, path, data))
    return trace


def dcmtk(name: str) -> str:
    """dcmtk's tool, never the pynetdicom app of the same name in the venv (docs/benchmarks.md)."""
    path = Path("/usr/bin") / name
    if not path.exists():
        pytest.skip(f"dcmtk {name} not installed")
    return str(path)


def traced_serve(home: Path, trace_file: Path) -> tuple[subprocess.Popen[str], int, int, int]:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace not installed")
    proc, info = start_node_serve(home, {**NODELAY, "INCISIVE_ALLOWED_AES": '["STORESCU"]'}, timeout=TIMEOUT,
                                  prefix=[strace, "-f", "-tt", "-yy", "-s", "4096", "-e", f"trace={SYSCALLS}", "-o",
                                          str(trace_file)], stderr=subprocess.DEVNULL)
    return proc, int(info["pid"]), int(info["dicom_port"]), int(info["http_port"])


def stop(proc: subprocess.Popen[str], serve_pid: int) -> None:
    """SIGTERM to the traced serve (by its pid; strace itself would detach and leave it running), then strace
    exits with it, the trace complete."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(serve_pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(serve_pid, signal.SIGKILL)
        proc.kill()
        proc.wait(10)


def stow_body(path: Path, boundary: str = "incisive-durability") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode())
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def check_order(trace: Trace, node: Node, digest: str, responded: float, what: str) -> None:
    obj = node.store.path(digest)
    file_synced = [t for t in trace.syncs(str(obj)) if t < responded]
    assert file_synced, f"{what}: acknowledged before its object file was fsynced"
    dir_synced = [t for t in trace.syncs(str(obj.parent)) if file_synced[0] <= t < responded]
    assert dir_synced, f"{what}: acknowledged before its object's directory was fsynced"
    committed = [t for t in trace.writes("catalogue.db-wal") if dir_synced[0] <= t < responded]
    assert committed, f"{what}: acknowledged before the catalogue commit reached the WAL"


@pytest.mark.slow
def test_every_acknowledgement_follows_its_fsyncs(tmp_path: Path) -> None:
    storescu = dcmtk("storescu")
    generate_cohort(tmp_path / "cohort", CohortSpec(patients=6, seed=9, size=16, ct_slices=3, mr_slices=2))
    files = sorted(p for p in (tmp_path / "cohort" / "dicom").rglob("*.dcm")
                   if pydicom.dcmread(p, stop_before_pixels=True).Modality in ("CT", "MR"))
    dimse, stow = files[:-4], files[-4:]
    assert len(dimse) >= 5
    home = tmp_path / "node"
    node = Node.init(home, provider="Order Hospital")
    token = create_token(node, "uploader", "tests")
    trace_file = tmp_path / "serve.strace"
    proc, serve_pid, dicom_port, http_port = traced_serve(home, trace_file)
    try:
        sent = subprocess.run([storescu, "-v", "-aet", "STORESCU", "-aec", "INCISIVE", "127.0.0.1", str(dicom_port),
                               *map(str, dimse)], capture_output=True, text=True, env=NODELAY, timeout=TIMEOUT)
        acked = parse_acknowledged((sent.stdout + sent.stderr).splitlines())
        assert len(acked) == len(dimse), (sent.stdout + sent.stderr)[-2000:]
        for path in stow:  # one instance per request, in order: the k-th HTTP response answers the k-th file
            body, content_type = stow_body(path)
            r = httpx.post(f"http://127.0.0.1:{http_port}/dicom-web/studies", content=body, timeout=120,
                           headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text[:500]
    finally:
        stop(proc, serve_pid)
    trace = parse_trace(trace_file.read_text(errors="replace"))
    with node.catalogue.session() as s:
        stored = dict(s.execute(select(Instance.sop_uid, Instance.object_hash)).all())
    node.catalogue.dispose()

    responses = trace.sends(dicom_port)
    for path in dimse:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        digest = stored[node.pseudonymiser.uid(uid)]
        rsp = [e.t for e in responses if uid in e.data]  # the C-STORE-RSP names the Affected SOP Instance UID
        assert rsp, f"no C-STORE-RSP for {path.name} in the trace"
        check_order(trace, node, digest, rsp[0], f"C-STORE of {path.name}")

    http = [e.t for e in trace.sends(http_port) if e.data.lstrip(", ").startswith('"HTTP/1.1 ')]
    assert len(http) == len(stow)
    for path, responded in zip(stow, http, strict=True):
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        check_order(trace, node, stored[node.pseudonymiser.uid(uid)], responded, f"STOW-RS of {path.name}")


def test_backup_reports_success_after_its_manifest_is_durable(tmp_path: Path, cohort: Path) -> None:
    """``backup run`` under strace: the snapshot's manifest.json (written to a temporary file, fsynced, renamed into
    place) and then its folder are fsynced before the command's first byte of output (its report)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace not installed")
    node = Node.init(tmp_path / "node", provider="Backup Hospital")
    import_cohort(node, cohort / "dicom")
    node.catalogue.dispose()
    drive = tmp_path / "drive"
    drive.mkdir()
    config.add_target(node.home, "usb", str(drive))
    trace_file = tmp_path / "backup.strace"
    done = subprocess.run([strace, "-f", "-tt", "-yy", "-s", "256", "-e", f"trace={SYSCALLS}", "-o", str(trace_file),
                           sys.executable, "-m", "incisive", "backup", "run", "--json", "--home", str(node.home)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    snapshot = json.loads(done.stdout)["snapshot"]
    trace = parse_trace(trace_file.read_text(errors="replace"))
    reported = [e.t for e in trace.events if e.call == "write" and e.fd == 1]
    assert reported, "the report never reached stdout in the trace"
    folder = next(p for p in drive.rglob("manifest.json") if snapshot in str(p)).parent
    tmp_synced = [e.t for e in trace.events if e.call in ("fsync", "fdatasync") and e.data.rstrip().endswith("= 0")
                  and Path(e.path).parent == folder and Path(e.path).name.startswith(".manifest.json.")]
    if not tmp_synced:  # the fd's path after the rename is the manifest itself
        tmp_synced = trace.syncs(str(folder / "manifest.json"))
    assert tmp_synced and tmp_synced[0] < reported[0], "success reported before the manifest's bytes were fsynced"
    dir_synced = [t for t in trace.syncs(str(folder)) if t > tmp_synced[0]]
    assert dir_synced and dir_synced[0] < reported[0], "success reported before the manifest's folder was fsynced"

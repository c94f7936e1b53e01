"""kill -9 the node mid-stream: every acknowledged instance survives, fsck is clean, a resend completes the set.

An instance is acknowledged (C-STORE Success) only after its object is fsynced and its catalogue row
committed; ``storescu -v`` tells which files got a Success response before the node died.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import pydicom
import pytest
from sqlalchemy import func, select

from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.node.catalogue.models import Instance, QuarantineItem
from incisive.node.fsck import fsck
from incisive.node.home import Node
from tests.node.net.conftest import NODELAY, need_tool
from tests.node.serve_process import start_node_serve

TIMEOUT = 240


def _lines(stream: IO[str], out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line.rstrip("\n"))
    out.put(None)


def start_serve(home: Path) -> tuple[subprocess.Popen[str], int]:
    proc, info = start_node_serve(home, {**NODELAY, "INCISIVE_ALLOWED_AES": '["STORESCU"]'}, timeout=TIMEOUT)
    return proc, int(info["dicom_port"])


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def parse_acknowledged(lines: list[str]) -> set[str]:
    """Files whose C-STORE got a Success response, from ``storescu -v`` output."""
    acked: set[str] = set()
    current = None
    for line in lines:
        if line.startswith("I: Sending file: "):
            current = line[len("I: Sending file: "):].strip()
        elif line.startswith("I: Received Store Response (Success)") and current:
            acked.add(current)
            current = None
    return acked


@pytest.mark.slow
def test_kill_9_mid_stream(tmp_path: Path) -> None:
    storescu = need_tool("storescu")
    generate_cohort(tmp_path / "cohort", CohortSpec(patients=44, seed=5, size=16, ct_slices=24, mr_slices=16))
    folder = tmp_path / "cohort" / "dicom"
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    assert len(files) >= 1000
    home = tmp_path / "node"
    Node.init(home, provider="Durability Hospital").catalogue.dispose()

    proc, port = start_serve(home)
    sender = subprocess.Popen([storescu, "-v", "-aet", "STORESCU", "-aec", "INCISIVE", "127.0.0.1", str(port), *files],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=NODELAY)
    assert sender.stdout is not None
    out: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(sender.stdout, out), daemon=True).start()
    seen: list[str] = []
    successes = 0
    target = len(files) // 3
    deadline = time.monotonic() + TIMEOUT
    while successes < target and time.monotonic() < deadline:
        try:
            line = out.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        successes += line.startswith("I: Received Store Response (Success)")
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream, mid-association
    proc.wait(30)
    sender.wait(60)
    while (line := out.get(timeout=30)) is not None:
        seen.append(line)
    acked = parse_acknowledged(seen)
    assert target <= len(acked) < len(files)

    proc, port = start_serve(home)  # restart: recovery runs before serving
    try:
        node = Node.open(home)
        with node.catalogue.session() as s:
            stored = dict(s.execute(select(Instance.sop_uid, Instance.object_hash)).all())
            held = dict(s.execute(select(QuarantineItem.sop_uid, QuarantineItem.object_hash)).all())
        for path in acked:
            uid = node.pseudonymiser.uid(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
            if uid in stored:
                assert node.store.verify(stored[uid])
            else:
                assert uid in held and node.quarantine.verify(held[uid])
        assert fsck(node).clean

        resend = subprocess.run([storescu, "-aet", "STORESCU", "-aec", "INCISIVE",
                                 "+sd", "+r", "127.0.0.1", str(port), str(folder)],
                                capture_output=True, text=True, env=NODELAY, timeout=TIMEOUT)
        assert resend.returncode == 0, resend.stderr[-2000:]
        with node.catalogue.session() as s:
            n_inst = s.scalar(select(func.count(Instance.id))) or 0
            n_held = s.scalar(select(func.count(QuarantineItem.id))) or 0
            distinct = s.scalar(select(func.count(func.distinct(Instance.sop_uid)))) or 0
        assert n_inst + n_held == len(files) and distinct == n_inst
        report = fsck(node)
        assert report.clean and report.objects_checked == len(files)
        node.catalogue.dispose()
    finally:
        stop(proc)
    assert not (home / "run" / "serve.pid").exists()

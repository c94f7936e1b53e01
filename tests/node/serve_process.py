"""``incisive node serve`` as a real process for tests: started on free ports, its "listening" line read."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any


def read_lines(stream: IO[str], out: queue.Queue[str | None]) -> None:
    """Every line of ``stream`` into ``out``, then None (a reader thread's body)."""
    for line in stream:
        out.put(line)
    out.put(None)


def start_node_serve(home: Path, env: Mapping[str, str], *, prefix: Sequence[str] = (), timeout: float = 240,
                     stderr: int = subprocess.PIPE) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """``node serve --home HOME`` on 127.0.0.1 with free DICOM and HTTP ports (under ``prefix``, e.g. strace);
    returns the process and its JSON "listening" line (pid, dicom_port, http_port). AssertionError, with the
    server's stderr, when it does not come up within ``timeout`` seconds."""
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "incisive", "node", "serve", "--home", str(home),
                             "--dicom-port", "0", "--http-port", "0", "--host", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=stderr, text=True, env=dict(env))
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if line is None:
            break
        if line.startswith("{") and json.loads(line).get("event") == "listening":
            return proc, json.loads(line)
    proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"node serve did not start: {err}")

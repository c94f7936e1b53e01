"""A private Orthanc for interoperability tests and benchmarks: generated config, free ports, killed by PID.

Settings follow BENCHMARKS.md: own storage and index folders, ``RemoteAccessAllowed: false``, no
authentication, no storage compression, ``TCP_NODELAY=1`` in its environment. Test and benchmark scaffolding
(tests/node/net/test_orthanc.py, benchmarks/ingest.py): nothing here is used by a running node.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    workdir: Path
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # name → (AE, host, port)
    aet: str = "ORTHANC"
    http_port: int = 0
    dicom_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    plugins: list[str] = field(default_factory=list)  # shared objects, e.g. /usr/share/orthanc/plugins/…
    extra: dict[str, Any] = field(default_factory=dict)  # more configuration sections (DicomWeb, PostgreSQL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60) -> Orthanc:
        binary = shutil.which("Orthanc")
        if binary is None:
            raise FileNotFoundError("Orthanc is not installed (Debian package 'orthanc')")
        self.http_port, self.dicom_port = free_port(), free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "incisive-peer", "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"), "HttpPort": self.http_port,
            "DicomPort": self.dicom_port, "DicomAet": self.aet, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "StorageCompression": False, "Plugins": list(self.plugins),
            "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "ConcurrentJobs": 1, "HttpVerbose": False, **self.extra,
        }
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        log = (self.workdir / "orthanc.log").open("wb")
        self.proc = subprocess.Popen([binary, str(path)], stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "TCP_NODELAY": "1"}, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.proc.returncode}); see {self.workdir / 'orthanc.log'}")
            try:
                if httpx.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("Orthanc did not start in time")

    def version(self) -> str:
        return str(httpx.get(f"{self.url}/system", timeout=10).json().get("Version", "?"))

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.url}{path}", timeout=60)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: bytes | Any, timeout: float = 600) -> Any:
        if isinstance(body, bytes):
            r = httpx.post(f"{self.url}{path}", content=body, timeout=timeout)
        else:
            r = httpx.post(f"{self.url}{path}", json=body, timeout=timeout)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

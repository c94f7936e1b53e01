"""The DICOM SCP and the HTTP API (DICOMweb) of one node, in one process (``incisive node
serve``, :mod:`incisive.cli.serve`).

Start-up writes ``<node>/run/serve.pid``; a clean stop removes it. Finding it at start-up with no live process
means the last run was killed (``kill -9``, power cut): ``fsck --repair`` then re-catalogues objects that
were fsynced but whose catalogue commit never happened, and clears partial writes, before any association
is accepted. Acknowledged instances need no recovery: they were durable before the acknowledgement.

TLS: ``dicom_tls`` (DIMSE, PS3.15 Annex B) and ``http_tls`` (DICOMweb over https) default to the node settings
``dicom_tls_cert/key/ca`` and ``tls_cert/key`` (:mod:`incisive.node.net.tls`); each file is checked before anything
listens.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from incisive.common.errors import ConfigError
from incisive.common.fsio import atomic_write_text
from incisive.common.logging import get_logger
from incisive.node.fsck import fsck
from incisive.node.home import Node
from incisive.node.net.tls import TlsFiles, http_options

if TYPE_CHECKING:  # the servers are imported when serving, not for every CLI start
    import uvicorn

    from incisive.node.net.scp import DicomServer

log = get_logger("serve")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(node: Node) -> dict[str, Any] | None:
    """Claim the node for this process; after an unclean stop, repair before serving."""
    run_dir = node.home / "run"
    run_dir.mkdir(exist_ok=True)
    marker = run_dir / "serve.pid"
    repaired: dict[str, Any] | None = None
    if marker.exists():
        try:
            pid = int(marker.read_text().strip() or "0")
        except ValueError:
            pid = 0
        if pid and pid != os.getpid() and _alive(pid):
            raise ConfigError(f"this node is already being served by process {pid}")
        report = fsck(node, repair=True)
        repaired = report.repaired
        log.warning("previous serve did not stop cleanly; recovery: %s", repaired or "nothing to repair")
    atomic_write_text(marker, f"{os.getpid()}\n")
    return repaired


@dataclass
class Bound:
    dicom_port: int
    http_port: int


class NodeServices:
    """DICOM SCP + uvicorn in background threads; ``start()`` returns the bound ports (0 = any free one)."""

    def __init__(self, node: Node, host: str | None = None, dicom_port: int | None = None,
                 http_port: int | None = None, ae_title: str | None = None,
                 allowed_aes: list[str] | None = None, dicom_tls: TlsFiles | None = None,
                 http_tls: TlsFiles | None = None) -> None:
        self.node = node
        s = node.settings
        self.dicom_tls = dicom_tls or TlsFiles.from_options("DICOM TLS", s.dicom_tls_cert, s.dicom_tls_key,
                                                            s.dicom_tls_ca)
        self.http_tls = http_tls or TlsFiles.from_options("DICOMweb TLS", s.tls_cert, s.tls_key)
        self._http_tls_options = http_options(self.http_tls) if self.http_tls is not None else {}
        self.host = host if host is not None else node.settings.listen_host
        self.http_port = http_port if http_port is not None else node.settings.http_port
        from incisive.node.net.scp import DicomServer

        self.dicom: DicomServer = DicomServer(node, self.host, dicom_port, ae_title, allowed_aes,
                                                tls=self.dicom_tls)
        self._http: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._claimed = False

    def start(self, claim: bool = True) -> Bound:
        if claim:
            recover(self.node)
            self._claimed = True
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.http_port))
        http_port = int(sock.getsockname()[1])
        import uvicorn

        from incisive.compat.uvicorn_0_49 import server_options
        from incisive.node.api.app import create_app

        s = self.node.settings  # header/keep-alive timeouts and a connection cap (503 beyond): slowloris-proof
        limits = server_options(s.http_header_timeout_s, s.http_keep_alive_s, s.http_max_connections)
        config = uvicorn.Config(create_app(self.node), log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5, **limits, **self._http_tls_options)
        self._http = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._http.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="incisive-http")
        dicom_port = self.dicom.start()
        self._thread.start()
        while not self._http.started:
            if not self._thread.is_alive():
                self.dicom.stop()
                raise ConfigError("the HTTP API failed to start")
            self._thread.join(0.02)
        log.info("node services up: dicom=%d http=%d", dicom_port, http_port)
        return Bound(dicom_port, http_port)

    def stop(self) -> None:
        if self._http is not None:
            self._http.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.dicom.stop()
        if self._claimed:
            (self.node.home / "run" / "serve.pid").unlink(missing_ok=True)
            self._claimed = False


def serve_forever(node: Node, host: str | None = None, dicom_port: int | None = None, http_port: int | None = None,
                  ae_title: str | None = None, dicom_tls: TlsFiles | None = None,
                  http_tls: TlsFiles | None = None) -> None:
    """Serve until SIGINT/SIGTERM: writes ``run/serve.json`` and prints one ``listening`` JSON line (ports) first."""
    services = NodeServices(node, host, dicom_port, http_port, ae_title, dicom_tls=dicom_tls, http_tls=http_tls)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    bound = services.start()
    info = {"ae_title": services.dicom.ae_title, "host": services.host, "dicom_port": bound.dicom_port,
            "http_port": bound.http_port, "pid": os.getpid(),
            "tls": {"dicom": services.dicom.tls_mode(), "http": "on" if services.http_tls is not None else "off"}}
    atomic_write_text(node.home / "run" / "serve.json", json.dumps(info) + "\n")
    print(json.dumps({"event": "listening", **info}), flush=True)
    try:
        stop.wait()
    finally:
        services.stop()
        log.info("node services stopped")

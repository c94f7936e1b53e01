"""``incisive central serve``: the DIMSE listener and the HTTP app of every tenant, in one process.

Start-up, before anything listens:

1. :meth:`Central.open` (by the CLI) checks the master key: missing, loose mode, wrong passphrase, or a key that
   does not open ``secrets/master.check`` stops here with the reason (a :class:`MasterKeyError`), nothing
   written; interrupted erases are finished;
2. ``central/run/serve.pid`` claims the Central Node for this process (another live ``central serve`` is refused);
3. every active tenant's node is opened, its key ring unwrapped (a ring the master key cannot open stops the
   start, naming the tenant) and claimed with the node's own :func:`incisive.node.serve.recover` (after an
   unclean stop: ``fsck --repair`` of that tenant). A tenant added while serving is claimed when first served;
4. HTTP (uvicorn, the node's header/keep-alive/connection limits) and DIMSE
   (:class:`incisive.central.dimse.CentralDicomServer`) start; ``run/serve.json`` and one ``listening`` JSON line
   give the ports. SIGINT/SIGTERM stop both and release every claim.

TLS as ``node serve`` has it (:mod:`incisive.node.net.tls`): ``--dicom-tls-*`` for the DICOM port,
``--tls-cert/--tls-key`` for https, defaulting to the same names in ``central.toml``'s serving fields.
Logs: ``central/logs/central.log`` and each tenant's own (:mod:`incisive.central.logs`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from incisive.central.app import CentralApp, TenantPool, create_central_app
from incisive.central.dimse import CentralDicomServer, service_settings
from incisive.central.home import Central
from incisive.central.logs import configure_central_logging
from incisive.central.tenant_api import BundleSource
from incisive.common.errors import ConfigError, IncisiveError
from incisive.common.fsio import atomic_write_text
from incisive.common.logging import get_logger
from incisive.node.home import Node
from incisive.node.net.tls import TlsFiles, http_options
from incisive.node.serve import recover

if TYPE_CHECKING:
    import uvicorn

log = get_logger("central.serve")


@dataclass
class Bound:
    dicom_port: int
    http_port: int


def _claim_central(central: Central) -> None:
    """``central/run/serve.pid``: one ``central serve`` per Central Node."""
    run = central.dir / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    marker = run / "serve.pid"
    if marker.exists():
        try:
            pid = int(marker.read_text().strip() or "0")
        except ValueError:
            pid = 0
        if pid and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                pass
            except PermissionError:
                raise ConfigError(f"this Central Node is already being served by process {pid}") from None
            else:
                raise ConfigError(f"this Central Node is already being served by process {pid}")
    atomic_write_text(marker, f"{os.getpid()}\n")


def _claim_tenant(node: Node) -> None:
    """Unwrap the tenant's key ring (a wrong master key or damaged ring stops here) and claim its node."""
    try:
        node.keyring  # noqa: B018 - opened now, so a bad ring fails at start, not at the first C-STORE
    except IncisiveError as exc:
        raise ConfigError(f"tenant {node.settings.node_id}: its key ring does not open: {exc}") from None
    recover(node)


class CentralServices:
    """The HTTP app and the DIMSE listener of a Central Node in background threads; ``start()`` -> ports."""

    def __init__(self, central: Central, host: str | None = None, dicom_port: int | None = None,
                 http_port: int | None = None, dicom_tls: TlsFiles | None = None, http_tls: TlsFiles | None = None,
                 bundle_source: BundleSource | None = None, claim: bool = True) -> None:
        self.central = central
        self.settings = s = service_settings(central)
        self.host = host if host is not None else s.listen_host
        self.http_port = http_port if http_port is not None else s.http_port
        self.dicom_tls = dicom_tls or TlsFiles.from_options("DICOM TLS", s.dicom_tls_cert, s.dicom_tls_key,
                                                            s.dicom_tls_ca)
        self.http_tls = http_tls or TlsFiles.from_options("DICOMweb TLS", s.tls_cert, s.tls_key)
        self._http_tls_options = http_options(self.http_tls) if self.http_tls is not None else {}
        self.claim = claim
        self.pool = TenantPool(central, claim=_claim_tenant if claim else None)
        self.app: CentralApp = create_central_app(central, self.pool, bundle_source)
        self.dicom = CentralDicomServer(central, self.host, dicom_port, tls=self.dicom_tls, settings=s,
                                        open_tenant=self.pool.node)
        self._http: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._claimed = False

    def start(self) -> Bound:
        configure_central_logging(self.central.dir)
        if self.claim:
            _claim_central(self.central)
            self._claimed = True
        try:
            for record in self.central.tenants():
                self.pool.node(record.id)
            return self._listen()
        except BaseException:
            self.stop()
            raise

    def _listen(self) -> Bound:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.http_port))
        http_port = int(sock.getsockname()[1])
        import uvicorn

        from incisive.compat.uvicorn_0_49 import server_options

        s = self.settings
        limits = server_options(s.http_header_timeout_s, s.http_keep_alive_s, s.http_max_connections)
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5, **limits, **self._http_tls_options)
        self._http = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._http.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="incisive-central-http")
        dicom_port = self.dicom.start()
        self._thread.start()
        while not self._http.started:
            if not self._thread.is_alive():
                raise ConfigError("the HTTP API failed to start")
            self._thread.join(0.02)
        log.info("central services up: dicom=%d http=%d tenants=%d", dicom_port, http_port,
                 len(self.central.tenants()))
        return Bound(dicom_port, http_port)

    def stop(self) -> None:
        if self._http is not None:
            self._http.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.dicom.stop()
        if self.claim:
            for node in self.pool.claimed():
                (node.home / "run" / "serve.pid").unlink(missing_ok=True)
        if self._claimed:
            (self.central.dir / "run" / "serve.pid").unlink(missing_ok=True)
            self._claimed = False


def serve_forever(central: Central, host: str | None = None, dicom_port: int | None = None,
                  http_port: int | None = None, dicom_tls: TlsFiles | None = None,
                  http_tls: TlsFiles | None = None) -> None:
    """Serve until SIGINT/SIGTERM: writes ``central/run/serve.json`` and prints one ``listening`` JSON line."""
    services = CentralServices(central, host, dicom_port, http_port, dicom_tls, http_tls)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    bound = services.start()
    info = {"central": central.settings.name, "host": services.host, "dicom_port": bound.dicom_port,
            "http_port": bound.http_port, "pid": os.getpid(), "tenants": len(central.tenants()),
            "tls": {"dicom": services.dicom.tls_mode(), "http": "on" if services.http_tls is not None else "off"}}
    atomic_write_text(central.dir / "run" / "serve.json", json.dumps(info) + "\n")
    print(json.dumps({"event": "listening", **info}), flush=True)
    try:
        stop.wait()
    finally:
        services.stop()
        central.close()
        log.info("central services stopped")

"""A plain node with ``door = "verify"`` (what a Central Node tenant is) served on free ports, an uploader, and a
TCP proxy in front of the server that can cut every connection (mid-request) and come back."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from incisive.common.fsio import atomic_write_text
from incisive.common.settings import CONFIG_NAME
from incisive.node.api.tokens import create_token
from incisive.node.home import Node
from incisive.node.ingest import dicom_file
from incisive.node.ingest.dicom_import import worker_config
from incisive.node.net.tls import TlsFiles
from incisive.node.serve import NodeServices
from incisive.node.upload.home import Uploader


@dataclass
class Central:
    node: Node
    url: str
    port: int
    token: str


def make_verify(node: Node) -> Node:
    """Turn a fresh node into a Central Node tenant's door: verify, never pseudonymise again."""
    node.settings.door = "verify"
    atomic_write_text(node.home / CONFIG_NAME, node.settings.to_toml())
    return node


@contextlib.contextmanager
def serving(node: Node, http_tls: TlsFiles | None = None) -> Iterator[Central]:
    saved = dict(dicom_file._state)
    # the receiving side builds its worker once per node object; make sure this process's one is the door's
    dicom_file.init_worker(worker_config(node))
    services = NodeServices(node, host="127.0.0.1", dicom_port=0, http_port=0, allowed_aes=["PYTEST"],
                            http_tls=http_tls)
    bound = services.start(claim=False)
    scheme = "https" if http_tls else "http"
    try:
        yield Central(node, f"{scheme}://127.0.0.1:{bound.http_port}", bound.http_port,
                      create_token(node, "uploader", "tests"))
    finally:
        services.stop()
        dicom_file._state.clear()
        dicom_file._state.update(saved)


@pytest.fixture
def central(node: Node) -> Iterator[Central]:
    with serving(make_verify(node)) as c:
        yield c


@pytest.fixture
def sqlite_central(sqlite_node: Node) -> Iterator[Central]:
    with serving(make_verify(sqlite_node)) as c:
        yield c


@pytest.fixture
def uploader(tmp_path: Path) -> Uploader:
    up = Uploader.init(tmp_path / "uploader", "Test Hospital")
    up.settings.batch_bytes = 64 * 1024  # several batches from the small test cohort
    up.settings.workers = 2
    up.settings.retry_for_s = 1.0
    return up


class CuttingProxy:
    """Forwards 127.0.0.1:port to the server; :meth:`cut_after` cuts every connection once that many more request
    bytes went through (in the middle of a request body) and refuses connections until :meth:`restore`."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.budget: int | None = None
        self.is_cut = False
        self.cuts = 0
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def cut_after(self, n_bytes: int) -> None:
        with self.lock:
            self.budget = n_bytes

    def restore(self) -> None:
        with self.lock:
            self.budget, self.is_cut = None, False

    def close(self) -> None:
        self.listener.close()
        self._cut()

    def _cut(self) -> None:
        with self.lock:
            self.is_cut = True
            self.cuts += 1
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                refused = self.is_cut
            if refused:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, request: bool) -> None:
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if request:
                    with self.lock:
                        if self.budget is not None:
                            allowed = max(0, self.budget)
                            self.budget -= len(data)
                            if self.budget < 0:
                                data = data[:allowed]
                                cut = True
                            else:
                                cut = False
                        else:
                            cut = False
                    if data:
                        dst.sendall(data)
                    if cut:
                        self._cut()
                        return
                else:
                    dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy(sqlite_central: Central) -> Iterator[CuttingProxy]:
    p = CuttingProxy(sqlite_central.port)
    yield p
    p.close()

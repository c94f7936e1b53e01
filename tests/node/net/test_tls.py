"""DICOM TLS (PS3.15 Annex B) with dcmtk's storescu, and DICOMweb over HTTPS, with certificates made here.

* storescu ``+tls KEY CERT +cf CA`` stores into ``node serve --dicom-tls-*``;
* a plain (non-TLS) association to the TLS port fails cleanly and the SCP keeps serving;
* with ``--dicom-tls-ca`` a client certificate from another CA, or none, is refused;
* DICOMweb over https, httpx verifying the test CA (and refusing when it does not trust it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from incisive.common.errors import ConfigError
from incisive.node.catalogue.models import Instance
from incisive.node.home import Node
from incisive.node.net.scp import DicomServer
from incisive.node.net.tls import DeferredHandshakeContext, TlsFiles, dicom_context
from tests.node.net.conftest import CALLERS, NODELAY, PYDICOM_FILES, need_tool
from tests.node.net.pki import Ca, Issued, make_ca

CT = str(PYDICOM_FILES / "CT_small.dcm")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Ca | Issued]:
    folder = tmp_path_factory.mktemp("pki")
    hospital, rogue = make_ca(folder, "hospital-ca"), make_ca(folder / "rogue", "rogue-ca")
    return {"ca": hospital, "server": hospital.issue("node", server=True),
            "client": hospital.issue("modality", server=False), "rogue_ca": rogue,
            "rogue_client": rogue.issue("intruder", server=False)}


def _files(pki: dict[str, Ca | Issued], ca: bool) -> TlsFiles:
    server = pki["server"]
    assert isinstance(server, Issued)
    return TlsFiles(server.cert, server.key, pki["ca"].cert if ca else None)


@pytest.fixture
def tls_scp(sqlite_node: Node, pki: dict[str, Ca | Issued]) -> Iterator[DicomServer]:
    server = DicomServer(sqlite_node, host="127.0.0.1", port=0, allowed_aes=CALLERS, tls=_files(pki, ca=True))
    server.start()
    yield server
    server.stop()


def _storescu(port: int, client: Issued | None, ca: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    tls = ["+tls", str(client.key), str(client.cert)] if client else ["+tla"]
    argv = [need_tool("storescu"), *tls, "+cf", str(ca), *extra, "-aet", "STORESCU", "-aec", "INCISIVE",
            "127.0.0.1", str(port), CT]
    return subprocess.run(argv, capture_output=True, text=True, env=NODELAY, timeout=120)


def _count(node: Node) -> int:
    with node.catalogue.session() as s:
        return int(s.scalar(select(func.count(Instance.id))) or 0)


def test_storescu_tls_stores_with_client_certificate(tls_scp: DicomServer, pki: dict[str, Ca | Issued]) -> None:
    client = pki["client"]
    assert isinstance(client, Issued)
    done = _storescu(tls_scp.port, client, pki["ca"].cert)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _count(tls_scp.node) == 1


def test_plain_association_to_tls_port_fails_cleanly(tls_scp: DicomServer, pki: dict[str, Ca | Issued],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # a handshake in the accept loop would now hold every later client for 10 minutes (storescu's run: 120 s)
    monkeypatch.setattr(DeferredHandshakeContext, "handshake_timeout_s", 600.0)
    plain = subprocess.run([need_tool("storescu"), "-aet", "STORESCU", "-to", "20", "-ta", "20", "127.0.0.1",
                            str(tls_scp.port), CT], capture_output=True, text=True, env=NODELAY, timeout=120)
    assert plain.returncode != 0
    assert "Association Request Failed" in plain.stderr or "Peer aborted" in plain.stderr \
        or "connection" in plain.stderr.lower(), plain.stderr[-2000:]
    assert _count(tls_scp.node) == 0
    # a silent peer (connects, sends nothing) holds neither the accept loop nor later clients
    with socket.create_connection(("127.0.0.1", tls_scp.port), timeout=10):
        client = pki["client"]
        assert isinstance(client, Issued)
        ok = _storescu(tls_scp.port, client, pki["ca"].cert)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert _count(tls_scp.node) == 1


def test_client_certificate_from_another_ca_is_refused(tls_scp: DicomServer, pki: dict[str, Ca | Issued]) -> None:
    rogue = pki["rogue_client"]
    assert isinstance(rogue, Issued)
    refused = _storescu(tls_scp.port, rogue, pki["ca"].cert)
    assert refused.returncode != 0
    assert _count(tls_scp.node) == 0
    anonymous = _storescu(tls_scp.port, None, pki["ca"].cert)  # +tla: TLS without a client certificate
    assert anonymous.returncode != 0
    assert _count(tls_scp.node) == 0
    log = (tls_scp.node.log_dir / "incisive.log").read_text()
    assert "TLS handshake failed" in log


def test_without_ca_any_tls_client_may_associate(sqlite_node: Node, pki: dict[str, Ca | Issued]) -> None:
    server = DicomServer(sqlite_node, host="127.0.0.1", port=0, allowed_aes=CALLERS, tls=_files(pki, ca=False))
    server.start()
    try:
        anonymous = _storescu(server.port, None, pki["ca"].cert)
        assert anonymous.returncode == 0, anonymous.stderr[-2000:]
    finally:
        server.stop()
    assert _count(sqlite_node) == 1


def test_tls_files_are_checked_with_clear_errors(tmp_path: Path, pki: dict[str, Ca | Issued]) -> None:
    server, client = pki["server"], pki["client"]
    assert isinstance(server, Issued) and isinstance(client, Issued)
    with pytest.raises(ConfigError, match="give both"):
        TlsFiles.from_options("DICOM TLS", server.cert, None)
    with pytest.raises(ConfigError, match="does not exist"):
        TlsFiles.from_options("DICOM TLS", tmp_path / "missing.crt", server.key)
    with pytest.raises(ConfigError, match="cannot use certificate"):
        dicom_context(TlsFiles(server.cert, client.key))  # key of another certificate
    ctx = dicom_context(TlsFiles(server.cert, server.key, pki["ca"].cert))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.verify_mode == ssl.CERT_REQUIRED


def _start_serve(home: Path, *options: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen([sys.executable, "-m", "incisive", "node", "serve", "--home", str(home),
                             "--dicom-port", "0", "--http-port", "0", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "INCISIVE_ALLOWED_AES": '["STORESCU"]'})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        raise AssertionError(f"serve did not start: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
    return proc, json.loads(line)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_node_serve_dicomweb_and_dicom_over_tls(sqlite_node: Node, pki: dict[str, Ca | Issued]) -> None:
    """`node serve --tls-* --dicom-tls-*`: STOW-RS/QIDO-RS over https verified against the CA; TLS DIMSE."""
    from incisive.node.api.tokens import create_token

    server, client = pki["server"], pki["client"]
    assert isinstance(server, Issued) and isinstance(client, Issued)
    ca = pki["ca"].cert
    token = create_token(sqlite_node, "uploader", "tls test")
    viewer = create_token(sqlite_node, "viewer", "tls test")
    sqlite_node.catalogue.dispose()
    proc, info = _start_serve(sqlite_node.home, "--tls-cert", str(server.cert), "--tls-key", str(server.key),
                              "--dicom-tls-cert", str(server.cert), "--dicom-tls-key", str(server.key),
                              "--dicom-tls-ca", str(ca))
    try:
        assert info["tls"] == {"dicom": "on, client certificates required", "http": "on"}
        url = f"https://127.0.0.1:{info['http_port']}"
        body, boundary = _multipart(Path(CT).read_bytes())
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=60) as http:
            stored = http.post(f"{url}/dicom-web/studies", content=body, headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
            assert stored.status_code == 200, stored.text[:500]
            studies = http.get(f"{url}/dicom-web/studies", headers={"Authorization": f"Bearer {viewer}"})
            assert studies.status_code == 200 and len(studies.json()) == 1
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/dicom-web/studies", timeout=30)  # the system store does not know the test CA
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{info['http_port']}/dicom-web/studies", timeout=30)  # no plain HTTP
        dimse = _storescu(int(str(info["dicom_port"])), client, ca)
        assert dimse.returncode == 0, dimse.stderr[-2000:]
    finally:
        _stop(proc)
    assert proc.returncode == 0


def test_node_serve_refuses_half_configured_tls(sqlite_node: Node, pki: dict[str, Ca | Issued]) -> None:
    server = pki["server"]
    assert isinstance(server, Issued)
    sqlite_node.catalogue.dispose()
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "incisive", "node", "serve", "--home", str(sqlite_node.home),
                           "--dicom-port", "0", "--http-port", "0", "--dicom-tls-cert", str(server.cert)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "give both the certificate and the key" in done.stderr
    assert time.monotonic() - started < 120


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "incisive-tls-test"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    return body, boundary

"""Bounded DIMSE resources (issue 16 items 3 and 6): strangers cannot hold association slots, silent or idle
connections are closed within seconds, association limits per peer and in all, the called AE title is ours."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from incisive.node.home import Node
from incisive.node.net.scp import DicomServer
from tests.node.net.conftest import CALLERS, NODELAY, need_tool

ECHOSCU = "/usr/bin/echoscu"  # dcmtk's, not pynetdicom's app of the same name in the venv


def _server(node: Node, **settings: Any) -> DicomServer:
    for name, value in settings.items():
        setattr(node.settings, name, value)
    server = DicomServer(node, host="127.0.0.1", port=0, allowed_aes=CALLERS)
    server.start()
    return server


@pytest.fixture
def make_server(sqlite_node: Node) -> Iterator[Any]:
    servers: list[DicomServer] = []

    def make(**settings: Any) -> DicomServer:
        servers.append(_server(sqlite_node, **settings))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


def _silent(port: int, n: int, host: str = "127.0.0.1") -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(host, 0))
        socks.append(s)
    return socks


def _associate(port: int, aet: str = "PYTEST", called: str = "INCISIVE", host: str = "127.0.0.1") -> Any:
    ae = AE(ae_title=aet)
    ae.acse_timeout = 30
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title=called, bind_address=(host, 0))


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (EOF or reset); fails after ``seconds``."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        data = sock.recv(1)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        pytest.fail(f"the server kept a silent connection open for more than {seconds} s")
    assert data == b""
    return time.monotonic() - start


def test_silent_sockets_do_not_lock_out_a_real_peer(make_server: Any) -> None:
    """The issue's attack: 32 TCP connections that send nothing filled pynetdicom's limit of 32 and every real
    association was rejected until the attacker's sockets timed out (30 s)."""
    need_tool("echoscu")
    server = make_server()
    silent = _silent(server.port, 32)
    try:
        time.sleep(0.5)  # let the server accept them all
        start = time.monotonic()
        r = subprocess.run([ECHOSCU, "-aet", "ECHOSCU", "-aec", "INCISIVE", "127.0.0.1", str(server.port)],
                           capture_output=True, text=True, env=NODELAY, timeout=60)
        elapsed = time.monotonic() - start
        assert r.returncode == 0, r.stderr[-1000:]
        assert elapsed < 5, f"echo took {elapsed:.1f} s behind 32 silent sockets"
    finally:
        for s in silent:
            s.close()


def test_silent_connection_closed_within_the_acse_timeout(make_server: Any) -> None:
    server = make_server(dicom_acse_timeout_s=2.0)
    [sock] = _silent(server.port, 1)
    with sock:
        assert _closed_within(sock, 15) >= 1.0


def test_default_acse_timeout_is_seconds(sqlite_node: Node) -> None:
    assert sqlite_node.settings.dicom_acse_timeout_s <= 10
    assert sqlite_node.settings.dicom_network_timeout_s <= 60


def test_idle_association_is_aborted_by_the_network_timeout(make_server: Any) -> None:
    server = make_server(dicom_network_timeout_s=2.0)
    assoc = _associate(server.port)
    assert assoc.is_established
    deadline = time.monotonic() + 20
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not assoc.is_established, "an idle association stayed open past the network timeout"
    assert assoc.is_aborted or assoc.is_released


def test_association_limit_rejects_local_limit_exceeded_and_frees_slots(make_server: Any) -> None:
    server = make_server(dicom_max_associations=2, dicom_max_associations_per_peer=2)
    strangers = [_associate(server.port, aet="INTRUDER") for _ in range(3)]
    assert all(a.is_rejected for a in strangers)  # calling AE not recognised: they never held a slot
    held = [_associate(server.port), _associate(server.port)]
    assert all(a.is_established for a in held)
    third = _associate(server.port)
    assert third.is_rejected
    rj = third.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)  # transient, local-limit-exceeded
    held[0].release()
    deadline = time.monotonic() + 10
    while server.limits.held > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    again = _associate(server.port)
    assert again.is_established, "a released slot was not given back"
    again.release()
    held[1].release()
    log = (server.node.log_dir / "incisive.log").read_text()
    assert "association limit reached" in log


def test_association_limit_per_peer(make_server: Any) -> None:
    server = make_server(dicom_max_associations=8, dicom_max_associations_per_peer=1)
    first = _associate(server.port, host="127.0.0.1")
    assert first.is_established
    assert _associate(server.port, host="127.0.0.1").is_rejected
    other = _associate(server.port, host="127.0.0.2")
    assert other.is_established, "another peer address has its own budget"
    first.release()
    other.release()


def test_connection_cap_per_peer(make_server: Any) -> None:
    # The ACSE timeout is set far above the bound, so a close "at accept" and a close "after the ACSE timeout"
    # cannot be confused even on a loaded machine (the old bound of 5 s against the default timeout failed at 5.04 s).
    server = make_server(dicom_max_connections_per_peer=4, dicom_acse_timeout_s=60.0)
    silent = _silent(server.port, 4)
    try:
        time.sleep(0.5)
        [extra] = _silent(server.port, 1)
        with extra:
            assert _closed_within(extra, 50) < 30  # refused at accept, not after the ACSE timeout
        other = _associate(server.port, host="127.0.0.2")
        assert other.is_established
        other.release()
    finally:
        for s in silent:
            s.close()


def test_wrong_called_ae_title_is_rejected(make_server: Any) -> None:
    need_tool("echoscu")
    server = make_server()
    r = subprocess.run([ECHOSCU, "-aet", "ECHOSCU", "-aec", "WRONG", "127.0.0.1", str(server.port)],
                       capture_output=True, text=True, env=NODELAY, timeout=60)
    assert r.returncode != 0
    assert "Called AE Title Not Recognized" in r.stderr, r.stderr[-1000:]
    assoc = _associate(server.port, called="WRONG")
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x07)  # permanent, called AE unknown
    ok = subprocess.run([ECHOSCU, "-aet", "ECHOSCU", "-aec", "INCISIVE", "127.0.0.1", str(server.port)],
                        capture_output=True, text=True, env=NODELAY, timeout=60)
    assert ok.returncode == 0, ok.stderr[-1000:]
    log = (server.node.log_dir / "incisive.log").read_text()
    assert "called AE 'WRONG' is not ours" in log

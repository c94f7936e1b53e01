"""The event-driven association reactors: same protocol behaviour as pynetdicom's polling loops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pydicom
import pynetdicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from incisive.compat import pynetdicom_3_0_4
from tests.node.net.conftest import PYDICOM_FILES


class Server:
    def __init__(self, network_timeout: float = 30) -> None:
        self.installed: list[bool] = []
        self.stored: list[str] = []
        self.ended: list[str] = []
        self.ended_event = threading.Event()
        ae = AE(ae_title="REACTOR")
        ae.network_timeout = network_timeout
        ae.add_supported_context(Verification)
        ae.add_supported_context(CTImageStorage)
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, lambda e: self.installed.append(pynetdicom_3_0_4.install_event_reactors(e.assoc))),
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_RELEASED, lambda e: self._end("released")),
            (evt.EVT_ABORTED, lambda e: self._end("aborted")),
        ]
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        assert server is not None
        self.server = server
        self.port = int(server.server_address[1])

    def _store(self, event: Any) -> int:
        self.stored.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    def _end(self, how: str) -> None:
        self.ended.append(how)
        self.ended_event.set()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    s = Server(**getattr(request, "param", {}))
    yield s
    assert s.server is not None
    s.server.shutdown()


def _associate(port: int) -> Any:
    ae = AE(ae_title="PYTEST")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="REACTOR")
    assert assoc.is_established
    return assoc


def test_echo_store_and_release(server: Server) -> None:
    assoc = _associate(server.port)
    for _ in range(50):
        assert assoc.send_c_echo().Status == 0x0000
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    assert assoc.is_released
    assert server.ended_event.wait(5)
    assert server.installed == [True]
    assert server.stored == [str(ds.SOPInstanceUID)]
    assert server.ended == ["released"]


def test_peer_abort_is_noticed(server: Server) -> None:
    assoc = _associate(server.port)
    assert assoc.send_c_echo().Status == 0x0000
    assoc.abort()
    assert server.ended_event.wait(5)
    assert server.ended == ["aborted"]


@pytest.mark.parametrize("server", [{"network_timeout": 0.3}], indirect=True)
def test_network_timeout_still_fires(server: Server) -> None:
    """The idle timer is checked while the loops block: an idle peer is aborted after network_timeout."""
    assoc = _associate(server.port)
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    assert server.installed == [True]


def test_unknown_pynetdicom_version_is_left_alone(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "99.0.0")
    assoc = _associate(server.port)
    assert assoc.send_c_echo().Status == 0x0000  # the stock reactors serve it
    assoc.release()
    assert server.installed == [False]

"""Every pynetdicom 3.0.4 internal that :mod:`incisive.compat.pynetdicom_3_0_4` replaces, carries over or reads:
each test names the attribute and fails when an upgrade removes it or changes its shape. The protocol behaviour
of the swapped loops is tested over real associations in ``tests/node/net/test_reactor.py`` and
``test_scp.py``."""

from __future__ import annotations

import inspect
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket

from incisive.compat import pynetdicom_3_0_4 as compat
from tests.compat.conftest import attr, params

PORT = "incisive.compat.pynetdicom_3_0_4"


def test_installed_pynetdicom_is_the_patched_release() -> None:
    assert compat.applies(), f"pynetdicom {pynetdicom.__version__} is installed, the loops mirror 3.0.4: port {PORT}"


@pytest.fixture
def assoc() -> Iterator[Any]:
    """A fresh acceptor association (not started), as ``EVT_CONN_OPEN`` hands it over."""
    a = Association(AE(), "acceptor")
    yield a
    wake = getattr(a.dul, "_wake", -1)
    if wake >= 0:  # an EventDUL that never ran its reactor
        os.close(wake)


# ---------------------------------------------------------------- the stock loops the EventDUL mirrors
def test_dul_reactor_is_the_polling_loop_mirrored() -> None:
    """``DULServiceProvider.run_reactor`` still polls (``_run_loop_delay``) with the steps EventDUL._run repeats;
    if pynetdicom changes the loop (or stops polling), the copy must be re-checked or dropped."""
    loop = attr(DULServiceProvider, "run_reactor", PORT)
    assert params(loop) == ["self"]
    assert set(loop.__code__.co_names) == {
        "A_ABORT_RQ", "Empty", "Exception", "LOGGER", "_dul_ready", "_idle_timer", "_is_transport_event", "_kill",
        "_kill_thread", "_process_recv_primitive", "_run_loop_delay", "artim_timer", "assoc", "cast", "do_action",
        "encode", "error", "event_queue", "exception", "expired", "get", "is_aborted", "is_established", "is_set",
        "put", "queue", "reason_diagnostic", "restart", "send", "set", "sleep", "socket", "source", "start",
        "state_machine", "time",
    }, "pynetdicom.dul.DULServiceProvider.run_reactor changed: compare it with EventDUL._run in " + PORT


def test_association_reactor_is_the_polling_loop_mirrored() -> None:
    loop = attr(Association, "_run_reactor", PORT)
    assert params(loop) == ["self"]
    assert set(loop.__code__.co_names) == {
        "EVT_ABORTED", "EVT_RELEASED", "LOGGER", "_is_paused", "_kill", "_reactor_checkpoint", "_serve_request",
        "abort", "acse", "cast", "dimse", "dul", "error", "evt", "get_msg", "idle_timer_expired", "info", "int",
        "is_aborted", "is_alive", "is_established", "is_release_requested", "is_released", "kill",
        "network_timeout_response", "receive_pdu", "release", "send_release", "sleep", "time", "trigger", "wait",
    }, "pynetdicom.association.Association._run_reactor changed: compare it with _association_reactor in " + PORT


# ---------------------------------------------------------------- what install_event_reactors touches
@pytest.mark.parametrize("name", ["socket", "event_queue", "to_provider_queue", "to_user_queue", "_recv_pdu",
                                  "state_machine", "_idle_timer", "_kill_thread", "artim_timer", "assoc"])
def test_dul_instance_attribute(assoc: Any, name: str) -> None:
    attr(assoc.dul, name, PORT)


def test_dul_shapes(assoc: Any) -> None:
    dul = assoc.dul
    assert isinstance(dul.event_queue, queue.Queue) and isinstance(dul._recv_pdu, queue.Queue)
    assert isinstance(attr(dul.state_machine, "current_state", PORT), str)
    for name in ("restart", "start"):
        attr(dul._idle_timer, name, PORT)
    attr(dul.artim_timer, "expired", PORT)
    assert params(attr(DULServiceProvider, "send_pdu", PORT)) == ["self", "primitive"]
    assert params(attr(DULServiceProvider, "__init__", PORT)) == ["self", "assoc"]
    for name in ("_process_recv_primitive", "_is_transport_event", "idle_timer_expired", "is_alive"):
        assert params(attr(DULServiceProvider, name, PORT)) == ["self"], f"DULServiceProvider.{name} changed"
    assert "wait" in params(attr(DULServiceProvider, "receive_pdu", PORT))


@pytest.mark.parametrize("name", ["_started_dul", "_dul_ready", "_reactor_checkpoint", "_is_paused", "_kill",
                                  "dimse", "acse", "network_timeout_response"])
def test_association_instance_attribute(assoc: Any, name: str) -> None:
    attr(assoc, name, PORT)


def test_association_shapes(assoc: Any) -> None:
    assert isinstance(assoc._dul_ready, threading.Event) and isinstance(assoc._reactor_checkpoint, threading.Event)
    assert isinstance(attr(assoc.dimse, "msg_queue", PORT), queue.Queue)
    assert params(attr(Association, "_serve_request", PORT)) == ["self", "msg", "context_id"]
    for name in ("is_release_requested", "is_aborted"):
        attr(assoc.acse, name, PORT)
    assert "is_response" in params(attr(type(assoc.acse), "send_release", PORT))
    for name in ("acse_timeout", "network_timeout"):  # re-assigning them re-applies the timers to the new DUL
        prop = inspect.getattr_static(Association, name)
        assert isinstance(prop, property) and prop.fset is not None, f"Association.{name} has no setter"
        assert "self.dul" in inspect.getsource(prop.fset), f"Association.{name} no longer sets the DUL's timer"


def test_install_event_reactors_carries_the_dul_state_over(assoc: Any) -> None:
    old = assoc.dul
    assert compat.install_event_reactors(assoc)
    new = assoc.dul
    assert isinstance(new, compat.EventDUL) and new is not old
    assert new.event_queue is old.event_queue and new.to_user_queue is old.to_user_queue
    assert new.to_provider_queue is old.to_provider_queue and new._recv_pdu is old._recv_pdu
    assert new.state_machine.current_state == old.state_machine.current_state
    assert assoc._run_reactor.__func__ is compat._association_reactor


def test_other_pynetdicom_release_is_left_alone(assoc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    old = assoc.dul
    assert not compat.install_event_reactors(assoc)
    assert assoc.dul is old and "_run_reactor" not in assoc.__dict__


# ---------------------------------------------------------------- guard_pdu_length
def test_dul_reads_a_whole_pdu_body_in_one_recv() -> None:
    """The guard works because ``_read_pdu_data`` asks the socket for the announced length at once."""
    source = inspect.getsource(attr(DULServiceProvider, "_read_pdu_data", PORT))
    assert "self.socket.recv(6)" in source and "self.socket.recv(pdu_length)" in source, \
        "pynetdicom.dul.DULServiceProvider._read_pdu_data no longer reads the PDU body with one recv"
    assert params(attr(AssociationSocket, "recv", PORT)) == ["self", "nr_bytes"]


def test_guard_pdu_length_refuses_long_reads(assoc: Any) -> None:
    reads: list[int] = []

    class Sock:
        def recv(self, nr_bytes: int) -> bytes:
            reads.append(nr_bytes)
            return b"x" * nr_bytes

    assoc.dul.socket = Sock()
    compat.guard_pdu_length(assoc, 100)
    assert assoc.dul.socket.recv(100) == b"x" * 100
    with pytest.raises(OSError, match="PDU exceeds"):
        assoc.dul.socket.recv(101)
    assert reads == [100]


# ---------------------------------------------------------------- reject_association (EVT_REQUESTED rejects)
def test_run_reactor_skips_negotiation_for_a_handler_reject() -> None:
    """``Association.run_reactor`` negotiates after ``EVT_REQUESTED`` unless ``is_rejected``/``is_aborted``
    is set, and ``ACSE.send_reject`` sets ``is_rejected``; :func:`reject_association` relies on both.
    Behaviour over real associations: ``tests/node/net/test_limits.py``."""
    reactor = attr(Association, "run_reactor", PORT)
    names = set(reactor.__code__.co_names)
    assert {"EVT_REQUESTED", "is_rejected", "is_aborted", "negotiate_association", "shutdown_request"} <= names, \
        "Association.run_reactor no longer checks is_rejected after EVT_REQUESTED: re-check reject_association"
    send_reject = attr(pynetdicom.acse.ACSE, "send_reject", PORT)
    assert params(send_reject) == ["self", "result", "source", "diagnostic"]
    assert {"is_rejected", "send_pdu"} <= set(send_reject.__code__.co_names), \
        "ACSE.send_reject no longer marks the association rejected: reject_association must set is_rejected"


def test_reject_association_sends_then_ends(assoc: Any) -> None:
    calls: list[Any] = []
    assoc.acse.send_reject = lambda r, s, d: calls.append((r, s, d))
    assoc.kill = lambda: calls.append("kill")
    compat.reject_association(assoc, 0x02, 0x03, 0x02)
    assert calls == [(0x02, 0x03, 0x02), "kill"]


# ---------------------------------------------------------------- C-STORE spooled to the server's directory
def test_chunked_store_option_and_its_temporary_file_are_there() -> None:
    """spool_stores sets pynetdicom's documented STORE_RECV_CHUNKED_DATASET and replaces the module attribute
    ``pynetdicom.dimse_messages.NamedTemporaryFile``, through which C_STORE_RQ decoding creates the spool file."""
    from pynetdicom import _config, dimse_messages

    attr(_config, "STORE_RECV_CHUNKED_DATASET", PORT)
    created = attr(dimse_messages, "NamedTemporaryFile", PORT)
    assert "NamedTemporaryFile" in inspect.getsource(dimse_messages.DIMSEMessage.decode_msg), (
        "pynetdicom.dimse_messages.DIMSEMessage.decode_msg no longer creates the C-STORE spool file with "
        f"NamedTemporaryFile: port {PORT}")
    assert callable(created)


def test_spooled_file_goes_to_the_directory_of_the_threads_ae(tmp_path: Any) -> None:
    """The replacement asks the calling thread (a DUL reactor: ``thread.assoc.ae``) for its server's directory."""
    ae, other = AE(), AE()
    compat.spool_stores(ae, str(tmp_path))
    seen: dict[str, str] = {}

    class Reactor(threading.Thread):  # shaped like pynetdicom's DUL thread: .assoc.ae
        def __init__(self, owner: Any, key: str) -> None:
            super().__init__()
            self.assoc, self.key = type("A", (), {"ae": owner})(), key

        def run(self) -> None:
            from pynetdicom import dimse_messages

            with dimse_messages.NamedTemporaryFile(delete=True, mode="wb", suffix=".dcm") as fh:
                seen[self.key] = fh.name

    try:
        for owner, key in ((ae, "ours"), (other, "other")):
            t = Reactor(owner, key)
            t.start()
            t.join()
    finally:
        compat.unspool_stores(ae)
    assert os.path.dirname(seen["ours"]) == str(tmp_path)
    assert os.path.dirname(seen["other"]) != str(tmp_path)  # an AE that registered no directory: the default

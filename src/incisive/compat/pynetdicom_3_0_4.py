"""pynetdicom 3.0.4 internals that incisive's DICOM SCP reaches into (tests: ``tests/compat``).

**Event-driven reactors** (:func:`install_event_reactors`) for acceptor associations (PS3.8 upper layer),
replacing pynetdicom's 1 ms polling. pynetdicom 3.0 runs two loops per association: the DUL reactor (PS3.8 §9.2
state machine; reads PDUs, sends queued primitives) and the association reactor (hands complete DIMSE messages to
the service handlers). Both *sleep* about 1 ms whenever they find nothing to do (``DULServiceProvider.
_run_loop_delay`` and a hard-coded ``time.sleep(0.001)`` in ``Association._run_reactor``), so every C-STORE
request waits for one wake-up of each loop and its response for another: about 2–3 ms per message on loopback,
more than Orthanc needs to store the instance. Both loops also take the GIL 1 000 times a second from the thread
de-identifying the data set. pynetdicom has no public option for either loop (``pynetdicom._config`` has none;
``_run_loop_delay`` is private and only sets the sleep's length). Measured (commit f14b1ef): a no-op C-STORE of
1 018 instances 2.9-3.7 s -> 1.1-2.1 s under load.

Here the same loops *block* until there is work:

* the DUL waits in ``select()`` on the association's socket and on an ``eventfd`` that :meth:`EventDUL.send_pdu`
  signals when the association queues a primitive (a C-STORE-RSP, an A-RELEASE-RP …);
* the association waits on the DIMSE message queue.

Both still wake every :data:`IDLE_WAIT` seconds to notice timers (ARTIM, network timeout), release and abort
requests and the kill flag, so nothing that the stock loops notice is missed — it is only noticed later, by at
most :data:`IDLE_WAIT`. The loops follow pynetdicom's own (MIT licence) step for step; only the waits differ.
:func:`install_event_reactors` swaps them into an association before it starts (``EVT_CONN_OPEN``): it replaces
``assoc.dul`` by an :class:`EventDUL` that takes over the old DUL's ``socket``, ``event_queue``,
``to_provider_queue``, ``to_user_queue``, ``_recv_pdu`` and state-machine state, and ``assoc._run_reactor``; the
loops read ``assoc._dul_ready``, ``_kill``, ``_reactor_checkpoint``, ``_is_paused``, ``_serve_request``,
``dimse.msg_queue``, ``dul._kill_thread``, ``_idle_timer``, ``_process_recv_primitive``, ``_is_transport_event``.
It does nothing on a pynetdicom release other than :data:`SUPPORTED`, or on TLS sockets (buffered bytes that
``select()`` cannot see).

**PDU length guard** (:func:`guard_pdu_length`): pynetdicom reads a PDU's 6-byte header, then asks the socket
for the whole body at once (``DULServiceProvider._read_pdu_data``: ``self.socket.recv(pdu_length)``), buffering
whatever length a peer announces (up to 4 GiB) before anything checks it. The guard wraps the association
socket's ``recv`` and refuses a read above the limit (the connection closes). It is a security limit, not a speed
patch, so it applies on every pynetdicom release, as it did before it moved here; the test of
``_read_pdu_data``'s shape says when an upgrade reads PDUs differently and the guard must be re-checked.

**Rejecting from EVT_REQUESTED** (:func:`reject_association`): pynetdicom checks its own association limit
(``maximum_associations``) over every open connection, silent ones included, so 32 sockets that send nothing
lock real peers out. incisive counts its own slots after the AE title checks (:mod:`incisive.node.net.limits`)
and rejects in an ``EVT_REQUESTED`` handler. pynetdicom 3.0.4 skips negotiation when the handler left the
association rejected (``Association.run_reactor`` checks ``is_rejected``, which ``ACSE.send_reject`` sets) and
then shuts the socket down at once; its own reject path calls ``kill()`` first, which waits until the DUL has
sent the A-ASSOCIATE-RJ. The helper does the same, so the peer reads the reason instead of a closed socket.

**C-STORE data sets spooled to the node's own directory** (:func:`spool_stores`): with pynetdicom's documented
option ``_config.STORE_RECV_CHUNKED_DATASET`` each received C-STORE data set is written to a file as its P-DATA
fragments arrive (``event.dataset_path``) instead of growing a ``BytesIO`` in memory; pynetdicom creates that
file with ``tempfile.NamedTemporaryFile`` in the default temporary directory, and offers no option for another.
The identified instance must not land in a shared ``/tmp``: the module attribute
``pynetdicom.dimse_messages.NamedTemporaryFile`` is replaced by a function that asks the calling thread (the
association's DUL reactor, whose ``assoc.ae`` is the server's AE) which directory its server registered, and
creates the file there (0600, the node's 0700 ``tmp``). An AE that registered none gets pynetdicom's default.
The option is process-wide: every acceptor in the process spools (pynetdicom's ``event.dataset`` reads the file).
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import socket
import ssl
import tempfile
import threading
import types
from typing import Any

import pynetdicom
from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

from incisive.common.logging import get_logger

log = get_logger("net.reactor")
scp_log = get_logger("net.scp")  # the guard's warning stays in the SCP's log, where it always was

SUPPORTED = ("3.0.4",)  # the loops below mirror this release's dul.py / association.py
IDLE_WAIT = 0.005  # seconds: latency for timers, release/abort requests and shutdown


class EventDUL(DULServiceProvider):
    """pynetdicom's DUL service provider with a blocking (``select``) reactor instead of a polling one."""

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        with contextlib.suppress(OSError):  # closed: the reactor has ended
            os.eventfd_write(self._wake, 1)

    def _wait(self) -> None:
        raw: socket.socket | None = getattr(self.socket, "socket", None)
        fds: list[Any] = [self._wake]
        if raw is not None and raw.fileno() >= 0:
            fds.append(raw)
        try:
            ready, _, _ = select.select(fds, [], [], IDLE_WAIT)
        except (OSError, ValueError):  # the socket closed under us; the transport check reports it
            return
        if self._wake in ready:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wake)

    def run_reactor(self) -> None:
        try:
            self._run()
        finally:
            os.close(self._wake)
            self._wake = -1

    def _run(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                idle = True
            if idle:
                self._wait()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:  # as pynetdicom: abort the association, never leave it half-open
                log.error("DUL reactor failed (%s); aborting the association", type(exc).__name__)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                if self.socket is not None:
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False


def _association_reactor(self: Any) -> None:
    """``Association._run_reactor`` with a blocking wait on the DIMSE message queue (acceptor side)."""
    self._is_paused = False
    while not self._kill:
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False
        try:
            context_id, msg = self.dimse.msg_queue.get(timeout=IDLE_WAIT)
        except queue.Empty:
            context_id, msg = None, None
        if msg:
            self._serve_request(msg, context_id)
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            log.debug("association released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return
        if not self.dul.is_alive():
            self.kill()
            return
        if self.dul.idle_timer_expired():
            log.warning("network timeout reached; aborting the association")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return


def applies() -> bool:
    """Whether the installed pynetdicom is the release the event-driven loops mirror."""
    return pynetdicom.__version__ in SUPPORTED


def install_event_reactors(assoc: Any) -> bool:
    """Give a not yet started acceptor association the event-driven reactors; ``False`` if left as it was."""
    if not applies() or assoc.is_alive() or assoc._started_dul:
        return False
    old = assoc.dul
    if isinstance(getattr(old.socket, "socket", None), ssl.SSLSocket):
        return False
    dul = EventDUL(assoc)
    # carry over what the transport already did (the accepted connection queued Evt5 in Sta1)
    dul.socket = old.socket
    dul.event_queue, dul.to_provider_queue = old.event_queue, old.to_provider_queue
    dul.to_user_queue, dul._recv_pdu = old.to_user_queue, old._recv_pdu
    dul.state_machine.current_state = old.state_machine.current_state
    assoc.dul = dul
    assoc.acse_timeout = assoc.acse_timeout  # re-applies the timers to the new DUL
    assoc.network_timeout = assoc.network_timeout
    assoc._run_reactor = types.MethodType(_association_reactor, assoc)
    return True


def guard_pdu_length(assoc: Any, limit: int) -> None:
    """Make the association's socket refuse to read more than ``limit`` bytes at once (``OSError``: pynetdicom
    then closes the connection, Evt17), so a peer announcing a huge PDU is dropped before its body is buffered.
    Call it on ``EVT_CONN_OPEN``, after :func:`install_event_reactors` (which keeps the same socket object)."""
    sock: Any = assoc.dul.socket
    original = sock.recv

    def guarded_recv(nr_bytes: int) -> Any:
        if nr_bytes > limit:  # the DUL asks for a whole PDU body at once: refuse before buffering it
            scp_log.warning("association closed: PDU of %d bytes exceeds the %d byte limit", nr_bytes, limit)
            raise OSError("PDU exceeds the maximum length")
        return original(nr_bytes)

    sock.recv = guarded_recv


def reject_association(assoc: Any, result: int, source: int, diagnostic: int) -> None:
    """Send A-ASSOCIATE-RJ from an ``EVT_REQUESTED`` handler and stop pynetdicom negotiating the association."""
    assoc.acse.send_reject(result, source, diagnostic)  # sets is_rejected: run_reactor will not negotiate
    assoc.kill()  # as pynetdicom's own reject path: the DUL sends the A-ASSOCIATE-RJ before the socket closes


# ---------------------------------------------------------------- C-STORE spooled to the server's directory
_SPOOL_DIRS: dict[int, str] = {}  # id(AE) -> directory its received C-STORE data sets are written to


def _spooled_temporary_file(*args: Any, **kwargs: Any) -> Any:
    thread = threading.current_thread()
    assoc = getattr(thread, "assoc", thread)  # the DUL reactor thread (decodes P-DATA), or the association itself
    directory = _SPOOL_DIRS.get(id(getattr(assoc, "ae", None)))
    if directory is not None:
        kwargs["dir"] = directory
    return tempfile.NamedTemporaryFile(*args, **kwargs)  # pynetdicom closes and unlinks it


def spool_stores(ae: Any, directory: str) -> None:
    """Write C-STORE data sets received by ``ae``'s associations to files in ``directory`` as they arrive."""
    from pynetdicom import _config, dimse_messages

    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = _spooled_temporary_file  # type: ignore[attr-defined]
    _SPOOL_DIRS[id(ae)] = directory


def unspool_stores(ae: Any) -> None:
    _SPOOL_DIRS.pop(id(ae), None)

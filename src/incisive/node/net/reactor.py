"""Event-driven reactors for pynetdicom acceptor associations (PS3.8 upper layer), replacing its 1 ms polling.

pynetdicom 3.0 runs two loops per association: the DUL reactor (PS3.8 §9.2 state machine; reads PDUs, sends
queued primitives) and the association reactor (hands complete DIMSE messages to the service handlers). Both
*sleep* about 1 ms whenever they find nothing to do, so every C-STORE request waits for one wake-up of each
loop and its response for another: about 2–3 ms per message on loopback, more than Orthanc needs to store the
instance. Both loops also take the GIL 1 000 times a second from the thread de-identifying the data set.

Here the same loops *block* until there is work:

* the DUL waits in ``select()`` on the association's socket and on an ``eventfd`` that :meth:`send_pdu`
  signals when the association queues a primitive (a C-STORE-RSP, an A-RELEASE-RP …);
* the association waits on the DIMSE message queue.

Both still wake every :data:`IDLE_WAIT` seconds to notice timers (ARTIM, network timeout), release and abort
requests and the kill flag, so nothing that the stock loops notice is missed — it is only noticed later, by at
most :data:`IDLE_WAIT`. The loops follow pynetdicom's own (MIT licence) step for step; only the waits differ.
:func:`install` swaps them into an association before it starts (``EVT_CONN_OPEN``) and does nothing on a
pynetdicom version it was not written for, or on TLS sockets (buffered bytes that ``select()`` cannot see).
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import socket
import ssl
import types
from typing import Any

import pynetdicom
from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

from incisive.common.logging import get_logger

log = get_logger("net.reactor")

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


def install(assoc: Any) -> bool:
    """Give a not yet started acceptor association the event-driven reactors; ``False`` if left as it was."""
    if pynetdicom.__version__ not in SUPPORTED or assoc.is_alive() or assoc._started_dul:
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

"""DICOM SCP (pynetdicom): C-ECHO, C-STORE into the de-identifying ingest path, C-FIND over the catalogue.

* Calling AEs must be on the node's allow-list (``allowed_aes``); others are rejected and logged (AE title
  and peer address only — no PHI). An empty list rejects everyone. The called AE title must be ours
  (``check_called_ae``; A-ASSOCIATE-RJ *called-AE-title-not-recognized* otherwise).
* Bounded: open connections are capped at accept time, association slots are taken only after both AE title
  checks (strangers cannot hold them), and ACSE/DIMSE/network timeouts close silent or idle associations within
  seconds (:mod:`incisive.node.net.limits`; node settings ``dicom_*``).
* Associations run :mod:`incisive.compat.pynetdicom_3_0_4`'s event-driven loops (no 1 ms polling per message).
* Every accepted socket gets ``TCP_NODELAY`` (see BENCHMARKS.md: without it loopback DIMSE pays ~40 ms per
  message to Nagle + delayed ACK).
* A PDU longer than the negotiated maximum (plus slack) closes the association before it is read into memory
  (:func:`incisive.compat.pynetdicom_3_0_4.guard_pdu_length`).
* C-STORE data sets are spooled to ``<node>/tmp`` as they arrive (:func:`incisive.compat.pynetdicom_3_0_4.
  spool_stores`) and de-identified from there: one above ``spool_threshold_bytes`` is held once (its output),
  its pixel data copied from the file.
* C-STORE is answered only after the de-identified object is fsynced and its catalogue row committed.
* With ``tls`` (``node serve --dicom-tls-cert/--dicom-tls-key [--dicom-tls-ca]``) the port speaks only TLS 1.2+
  (PS3.15 Annex B), client certificates required when a CA is given (:mod:`incisive.node.net.tls`).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from incisive.common.logging import get_logger
from incisive.compat import pynetdicom_3_0_4
from incisive.node.home import Node
from incisive.node.net import find
from incisive.node.net.limits import AssociationLimits, Budget
from incisive.node.net.receive import Receiver
from incisive.node.net.tls import TlsFiles, dicom_context, handshake

log = get_logger("net.scp")

STORAGE_SYNTAXES = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
    JPEG2000Lossless, JPEG2000, RLELossless,
]
QUERY_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
# C-STORE statuses (PS3.4 B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
WARNING_COERCION = 0xB000


def _safe_ae(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_ ." else "?" for ch in str(text)[:16]).strip()


def _status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


class DicomServer:
    """The node's DIMSE service; ``start()`` returns the bound port (``port=0`` picks a free one)."""

    def __init__(self, node: Node, host: str | None = None, port: int | None = None,
                 ae_title: str | None = None, allowed_aes: list[str] | None = None,
                 tls: TlsFiles | None = None) -> None:
        s = node.settings
        self.node = node
        self.host = host if host is not None else s.listen_host
        self.port = port if port is not None else s.dicom_port
        self.ae_title = ae_title or s.ae_title
        self.allowed = [a.strip() for a in (allowed_aes if allowed_aes is not None else s.allowed_aes) if a.strip()]
        self.max_pdu = s.max_pdu_bytes
        self.tls = tls
        self._ssl_context = dicom_context(tls) if tls is not None else None  # bad files fail here, not later
        self._server: ThreadedAssociationServer | None = None
        self._receivers: dict[int, Receiver] = {}
        self.spool = node.home / "tmp"  # 0700, beside the STOW spool: received C-STORE data sets, until de-identified
        self._spooling_ae: AE | None = None
        self._lock = threading.Lock()
        self.limits = AssociationLimits(Budget(s.dicom_max_associations, s.dicom_max_associations_per_peer,
                                               s.dicom_max_connections, s.dicom_max_connections_per_peer))

    def _ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = self.max_pdu
        s = self.node.settings
        # pynetdicom's own limit counts every open connection; ours (limits.py) counts only known peers
        ae.maximum_associations = s.dicom_max_connections
        ae.network_timeout = s.dicom_network_timeout_s
        ae.acse_timeout = s.dicom_acse_timeout_s
        ae.dimse_timeout = s.dicom_dimse_timeout_s
        ae.require_called_aet = s.check_called_ae
        # An empty allow-list must reject everyone; pynetdicom treats [] as "allow all".
        ae.require_calling_aet = self.allowed or [secrets.token_hex(8)]
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:
                ae.add_supported_context(cx.abstract_syntax, STORAGE_SYNTAXES)
        ae.add_supported_context(Verification, QUERY_SYNTAXES)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind, QUERY_SYNTAXES)
        ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind, QUERY_SYNTAXES)
        return ae

    def start(self) -> int:
        ae = self._ae()
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
        ]
        self.spool.mkdir(mode=0o700, exist_ok=True)
        self._sweep_spool(0)
        pynetdicom_3_0_4.spool_stores(ae, str(self.spool))
        self._spooling_ae = ae
        server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers,
                                 ssl_context=self._ssl_context)
        assert server is not None
        server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        server.verify_request = self._admit  # type: ignore[method-assign,assignment]
        self._server = server
        self.port = int(server.server_address[1])
        log.info("DICOM SCP listening: ae=%s port=%d allowed_aes=%d tls=%s", _safe_ae(self.ae_title), self.port,
                 len(self.allowed), self.tls_mode())
        if not self.allowed:
            log.warning("allowed_aes is empty: every association will be rejected")
        return self.port

    def tls_mode(self) -> str:
        if self.tls is None:
            return "off"
        return "on, client certificates required" if self.tls.ca is not None else "on"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._spooling_ae is not None:
            pynetdicom_3_0_4.unspool_stores(self._spooling_ae)
            self._spooling_ae = None
        with self._lock:
            receivers, self._receivers = list(self._receivers.values()), {}
        for r in receivers:
            r.finish()

    # -- handlers ------------------------------------------------------------------------------------------
    def _on_open(self, event: Any) -> None:
        sock: Any = event.assoc.dul.socket
        raw: socket.socket | None = getattr(sock, "socket", None)
        if isinstance(raw, ssl.SSLSocket):  # on this association's thread, not in the accept loop
            failed = handshake(raw)
            if failed is not None:  # the closed socket ends the association (Evt17) before any PDU is read
                log.warning("TLS handshake failed from %s: %s", event.assoc.requestor.address, failed)
                return
        pynetdicom_3_0_4.install_event_reactors(event.assoc)  # event-driven loops instead of 1 ms polling
        if raw is not None:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pynetdicom_3_0_4.guard_pdu_length(event.assoc, max(self.max_pdu, 65536) + 1024)

    def _admit(self, _request: Any, client_address: Any) -> bool:
        """``verify_request`` of the listening server: cap open connections before a thread is started."""
        peer = str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)
        open_now = [a for a in self._server.ae.active_associations] if self._server is not None else []
        from_peer = sum(1 for a in open_now if a.requestor.address == peer)
        if self.limits.admit_connection(peer, len(open_now), from_peer):
            return True
        log.warning("connection from %s refused: %d connections open (%d from it)", peer, len(open_now), from_peer)
        return False

    def _on_requested(self, event: Any) -> None:
        """Take an association slot once both AE titles passed; else A-ASSOCIATE-RJ local-limit-exceeded."""
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling, called = str(rq.calling_ae_title).strip(), str(rq.called_ae_title).strip()
        if calling not in self.allowed or (self.node.settings.check_called_ae and called != self.ae_title.strip()):
            return  # pynetdicom rejects it (calling / called AE title not recognised) and we log EVT_REJECTED
        peer = str(assoc.requestor.address)
        if self.limits.acquire(id(assoc), peer):
            return
        log.warning("association rejected: calling AE '%s' from %s, association limit reached (%d open)",
                    _safe_ae(calling), peer, self.limits.held)
        pynetdicom_3_0_4.reject_association(assoc, 0x02, 0x03, 0x02)  # transient, provider, local-limit-exceeded

    def _on_rejected(self, event: Any) -> None:
        rq = event.assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        why = "is not in allowed_aes" if calling not in self.allowed else \
            f"called AE '{_safe_ae(rq.called_ae_title)}' is not ours"
        log.warning("association rejected: calling AE '%s' from %s %s", _safe_ae(calling),
                    event.assoc.requestor.address, why)

    def node_for(self, assoc: Any) -> Node:
        """The node an association's C-STORE and C-FIND work on: this server's (a Central Node's server picks the
        tenant of the called AE title: :mod:`incisive.central.dimse`)."""
        return self.node

    def _receiver(self, event: Any) -> Receiver:
        key = id(event.assoc)
        with self._lock:
            r = self._receivers.get(key)
            if r is None:
                r = self._receivers[key] = Receiver(self.node_for(event.assoc),
                                                    f"dimse:{_safe_ae(event.assoc.requestor.ae_title)}")
            return r

    def _sweep_spool(self, older_than_s: float) -> None:
        """Remove C-STORE spool files (identified data) that no association writes any more: at start, those of a
        previous process; after each association, those an aborted transfer left behind."""
        cutoff = time.time() - older_than_s
        for path in self.spool.glob("tmp*.dcm"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime <= cutoff:
                    path.unlink()

    def _on_end(self, event: Any) -> None:
        s = self.node.settings  # a live transfer writes each fragment; a stalled one is aborted within these
        self._sweep_spool(s.dicom_network_timeout_s + s.dicom_dimse_timeout_s)
        self.limits.release(id(event.assoc))
        with self._lock:
            r = self._receivers.pop(id(event.assoc), None)
        if r is not None:
            r.finish()

    def _on_store(self, event: Any) -> Dataset:
        receiver = self._receiver(event)
        try:
            # written to <node>/tmp as it arrived (start() made this AE spool: spool_stores)
            outcome = receiver.deidentify_file(event.dataset_path)
        except Exception as exc:  # malformed command or meta: refuse the instance, keep the association
            log.warning("C-STORE refused: %s", type(exc).__name__)
            return _status(CANNOT_UNDERSTAND, "cannot decode the data set")
        result = receiver.record(outcome)
        if result.result == "rejected":
            log.info("C-STORE rejected: %s", result.reason)
            return _status(CANNOT_UNDERSTAND, result.reason)
        if result.result == "error":
            return _status(OUT_OF_RESOURCES, result.reason)
        if result.result == "conflict":
            return _status(WARNING_COERCION, "already stored with other content; kept the first")
        return _status(SUCCESS)

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        model = "PATIENT" if event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelFind \
            else "STUDY"
        yield from find.run_find(self.node_for(event.assoc), model, event.identifier, lambda: bool(event.is_cancelled))

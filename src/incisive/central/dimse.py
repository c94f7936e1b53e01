"""The DIMSE service of a Central Node: one AE on one port for every tenant.

The called AE title of an A-ASSOCIATE-RQ selects the tenant (each tenant's ``ae_title`` is unique in the
registry, ``central/tenants.json``, re-read when it changes: a tenant added or erased while serving counts at
its next association); everything after that works on that tenant's node only:

* called AE title that is no active tenant's (unknown, erasing, erased): A-ASSOCIATE-RJ *rejected-permanent,
  service-user, called-AE-title-not-recognised*;
* calling AE title not on that tenant's ``allowed_aes`` (its registry record; empty rejects everyone):
  A-ASSOCIATE-RJ *rejected-permanent, service-user, calling-AE-title-not-recognised*;
* a tenant that cannot be served now (its catalogue unreachable, its key ring not opening): A-ASSOCIATE-RJ
  *rejected-transient, service-provider, temporary-congestion*, and an error in its log;
* C-STORE goes through that tenant's :class:`~incisive.node.net.receive.Receiver` (its door, ``verify``: only
  instances the provider de-identified are accepted; its sealed store; its catalogue), C-FIND runs over that
  tenant's catalogue only, C-ECHO answers Success.

Everything else is :class:`~incisive.node.net.scp.DicomServer` as it is (connection caps at accept time, the
ACSE/DIMSE/network timeouts, the PDU guard, the event-driven loops, spooling, TLS), with the serving limits of
the Central Node (:func:`service_settings`); the C-STORE spool is ``central/tmp`` (0700). An association slot
is taken in the central budget and in the tenant's own (its ``dicom_max_associations`` / ``_per_peer``), so one
tenant's PACS cannot hold every slot. Log records of an association are tagged with its tenant
(:mod:`incisive.central.logs`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from incisive.central.logs import isolate_tenant_logs, tenant_context
from incisive.central.registry import TenantRecord, UnknownTenant
from incisive.common.errors import IncisiveError
from incisive.common.logging import get_logger
from incisive.common.settings import NodeSettings
from incisive.compat import pynetdicom_3_0_4
from incisive.node.home import Node
from incisive.node.net.limits import AssociationLimits, Budget
from incisive.node.net.scp import DicomServer, _safe_ae
from incisive.node.net.tls import TlsFiles

if TYPE_CHECKING:
    from pynetdicom import AE

    from incisive.central.home import Central

log = get_logger("central.dimse")

CENTRAL_AE = "INCISIVE-CENTRAL"  # the AE object's own title; a tenant's title is answered in its A-ASSOCIATE-AC
# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4
CALLED_NOT_RECOGNISED = (0x01, 0x01, 0x07)
CALLING_NOT_RECOGNISED = (0x01, 0x01, 0x03)
LOCAL_LIMIT = (0x02, 0x03, 0x02)
CONGESTION = (0x02, 0x03, 0x01)  # rejected-transient, service-provider (presentation), temporary-congestion
NO_REASON = (0x01, 0x01, 0x01)
# NodeSettings fields a Central Node's central.toml may set for its listeners (others are a tenant's)
SERVICE_FIELDS = ("listen_host", "dicom_port", "http_port", "max_pdu_bytes", "dicom_tls_cert", "dicom_tls_key",
                  "dicom_tls_ca", "tls_cert", "tls_key", "dicom_max_associations", "dicom_max_associations_per_peer",
                  "dicom_max_connections", "dicom_max_connections_per_peer", "dicom_acse_timeout_s",
                  "dicom_dimse_timeout_s", "dicom_network_timeout_s", "http_max_connections",
                  "http_header_timeout_s", "http_keep_alive_s")


def service_settings(central: Central) -> NodeSettings:
    """The serving settings of the Central Node's own listeners, as a NodeSettings (``home`` = the central
    directory: its ``tmp/`` is the C-STORE spool): the fields of :data:`SERVICE_FIELDS` that central.toml sets,
    the node defaults for the rest. No tenant's data is reachable through it."""
    given = central.settings.model_dump()
    values = {k: given[k] for k in SERVICE_FIELDS if given.get(k) not in (None, "")}
    return NodeSettings(provider="central", node_id="central", home=central.dir, ae_title=CENTRAL_AE,
                        allowed_aes=[], **values)


class _Tenancy:
    """What an accepted association serves: its tenant and that tenant's node."""

    __slots__ = ("node", "tenant")

    def __init__(self, tenant: str, node: Node) -> None:
        self.tenant, self.node = tenant, node


class CentralDicomServer(DicomServer):
    """One DICOM listener for every tenant of ``central``; ``start()`` returns the bound port."""

    def __init__(self, central: Central, host: str | None = None, port: int | None = None,
                 tls: TlsFiles | None = None, settings: NodeSettings | None = None,
                 open_tenant: Callable[[str], Node] | None = None) -> None:
        """``open_tenant``: the tenant's node by id (default: :meth:`Central.tenant_node`, its log isolated);
        :class:`incisive.central.serve.CentralServices` passes the one that also claims it for this process."""
        self.central = central
        self._open_tenant = open_tenant or self._default_open
        super().__init__(Node(settings or service_settings(central)), host, port, CENTRAL_AE, allowed_aes=[],
                         tls=tls)
        self._tenancy: dict[int, _Tenancy] = {}  # id(association) -> what it serves
        self._tenant_limits: dict[str, AssociationLimits] = {}
        self._map_lock = threading.Lock()

    def start(self) -> int:
        # for the start-up line only (the checks are per tenant): every calling AE some tenant allows
        self.allowed = sorted({a.strip() for r in self.central.tenants() for a in r.allowed_aes if a.strip()})
        return super().start()

    def _ae(self) -> AE:
        ae = super()._ae()
        # Both AE title checks are ours, per tenant (_on_requested); pynetdicom's take one title and one list
        ae.require_called_aet = False
        ae.require_calling_aet = []
        return ae

    # -- tenants -------------------------------------------------------------------------------------------
    def _tenant_of_ae(self, called: str) -> TenantRecord | None:
        """The active tenant whose AE title is ``called``, or None (the registry is re-read when it changed)."""
        for record in self.central.tenants():
            if record.state == "active" and record.ae_title.strip() == called:
                return record
        return None

    def _default_open(self, tenant: str) -> Node:
        node = self.central.tenant_node(tenant)
        isolate_tenant_logs(self.central.dir)
        return node

    def _limits_of(self, tenant: str, node: Node) -> AssociationLimits:
        with self._map_lock:
            limits = self._tenant_limits.get(tenant)
            if limits is None:
                s = node.settings
                limits = self._tenant_limits[tenant] = AssociationLimits(Budget(
                    s.dicom_max_associations, s.dicom_max_associations_per_peer, s.dicom_max_connections,
                    s.dicom_max_connections_per_peer))
            return limits

    def node_for(self, assoc: Any) -> Node:
        with self._map_lock:
            tenancy = self._tenancy.get(id(assoc))
        if tenancy is None:  # never negotiated through _on_requested: serve nothing
            raise RuntimeError("association has no tenant")
        return tenancy.node

    def tenant_for(self, assoc: Any) -> str:
        with self._map_lock:
            tenancy = self._tenancy.get(id(assoc))
        return tenancy.tenant if tenancy is not None else ""

    # -- handlers ------------------------------------------------------------------------------------------
    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        try:
            self._admit_association(assoc)
        except Exception as exc:  # fail closed: pynetdicom would otherwise negotiate (both checks are ours)
            log.error("association refused: tenant lookup failed (%s)", type(exc).__name__)
            pynetdicom_3_0_4.reject_association(assoc, *NO_REASON)

    def _admit_association(self, assoc: Any) -> None:
        rq = assoc.requestor.primitive
        calling, called = str(rq.calling_ae_title).strip(), str(rq.called_ae_title).strip()
        peer = str(assoc.requestor.address)
        record = self._tenant_of_ae(called)
        if record is None:
            log.warning("association rejected: called AE '%s' from %s is no tenant's", _safe_ae(called), peer)
            pynetdicom_3_0_4.reject_association(assoc, *CALLED_NOT_RECOGNISED)
            return
        tenant = record.id
        try:
            node = self._open_tenant(tenant)
        except UnknownTenant:  # erased or being erased since the registry was read
            log.warning("association rejected: called AE '%s' from %s: tenant not active", _safe_ae(called), peer)
            pynetdicom_3_0_4.reject_association(assoc, *CALLED_NOT_RECOGNISED)
            return
        except IncisiveError as exc:  # its catalogue unreachable, its key ring not opening: try again later
            with tenant_context(tenant):
                log.error("association rejected: the tenant cannot be served now (%s)", type(exc).__name__)
            pynetdicom_3_0_4.reject_association(assoc, *CONGESTION)
            return
        with tenant_context(tenant):
            if calling not in [a.strip() for a in record.allowed_aes if a.strip()]:
                log.warning("association rejected: calling AE '%s' from %s is not in the tenant's allowed_aes",
                            _safe_ae(calling), peer)
                pynetdicom_3_0_4.reject_association(assoc, *CALLING_NOT_RECOGNISED)
                return
            key, own = id(assoc), self._limits_of(tenant, node)
            if not self.limits.acquire(key, peer):
                log.warning("association rejected: calling AE '%s' from %s, central association limit reached "
                            "(%d open)", _safe_ae(calling), peer, self.limits.held)
                pynetdicom_3_0_4.reject_association(assoc, *LOCAL_LIMIT)
                return
            if not own.acquire(key, peer):
                self.limits.release(key)
                log.warning("association rejected: calling AE '%s' from %s, the tenant's association limit "
                            "reached (%d open)", _safe_ae(calling), peer, own.held)
                pynetdicom_3_0_4.reject_association(assoc, *LOCAL_LIMIT)
                return
            with self._map_lock:
                self._tenancy[key] = _Tenancy(tenant, node)
            assoc.acceptor.ae_title = called  # answered in the A-ASSOCIATE-AC

    def _on_rejected(self, event: Any) -> None:  # only pynetdicom's own rejections (ours log when they reject)
        log.warning("association rejected by the DICOM stack: calling AE '%s' from %s",
                    _safe_ae(event.assoc.requestor.primitive.calling_ae_title), event.assoc.requestor.address)

    def _on_end(self, event: Any) -> None:
        with tenant_context(self.tenant_for(event.assoc)):
            super()._on_end(event)
        key = id(event.assoc)
        with self._map_lock:
            tenancy = self._tenancy.pop(key, None)
            limits = self._tenant_limits.get(tenancy.tenant) if tenancy is not None else None
        if limits is not None:
            limits.release(key)

    def _on_store(self, event: Any) -> Dataset:
        with tenant_context(self.tenant_for(event.assoc)):
            return super()._on_store(event)

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        with tenant_context(self.tenant_for(event.assoc)):
            yield from super()._on_find(event)

    def stop(self) -> None:
        super().stop()
        with self._map_lock:
            self._tenancy.clear()

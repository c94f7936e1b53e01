"""The HTTP side of a Central Node: one ASGI app in front of every tenant's.

* ``/dicom-web/*`` (STOW-RS, QIDO-RS, WADO-RS: :func:`incisive.node.api.app.create_app` of the tenant's node,
  with its body and idle limits) and ``/tenant/v1/*`` (:mod:`incisive.central.tenant_api`) are routed by the
  bearer token: ``inc_<tenant>.<secret>`` names the tenant (:func:`incisive.node.api.tokens.token_tenant`), the
  request goes to that tenant's apps, built once per tenant and cached, and the tenant's own token store then
  checks the secret (a forged prefix gets 401 there, audited in that tenant's chain). A missing, malformed or
  unknown-tenant token, or one of a tenant being erased or erased, is answered here: 401 with the same message for
  an unknown and an erased tenant (no tenant name is confirmed or leaked), throttled per source
  (:mod:`incisive.common.throttle`) and audited, aggregated, in the central chain. An operator token there is
  403, each attempt audited in the central chain (``operator.refused``). A tenant that cannot be served now (its
  catalogue unreachable, its key ring not opening) is 503.
* ``/central/v1/tenants`` and ``/central/v1/usage``: the operator token only (``central/secrets/
  operator-tokens``); anything else is 401. The registry entries and counts, never a tenant's data.
* ``/health``: no token, no tenant names.

Every tenant request runs in :func:`incisive.central.logs.tenant_context`, so what it logs lands in that tenant's
log. Per tenant, one failed-token throttle is shared by its two apps; a source in back-off here is refused
before any tenant is looked at.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.routing import iter_route_contexts
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from incisive import __version__
from incisive.central.home import Central, operator_token_ok
from incisive.central.logs import isolate_tenant_logs, tenant_context
from incisive.central.registry import UnknownTenant
from incisive.central.tenant_api import PREFIX as TENANT_PREFIX
from incisive.central.tenant_api import BundleSource, create_tenant_app
from incisive.common.errors import IncisiveError
from incisive.common.logging import get_logger
from incisive.common.throttle import Report, Throttle
from incisive.node.api.app import create_app
from incisive.node.api.tokens import token_tenant
from incisive.node.home import Node

log = get_logger("central.http")
DICOMWEB_PREFIX = "/dicom-web"
_WORD = re.compile(r"[a-z][a-z0-9-]{0,31}")  # a route's own path segment (never a UID or a pseudonym)
TENANT_PREFIXES = (DICOMWEB_PREFIX, TENANT_PREFIX)  # routed by the token to a tenant's app
OPERATOR_REFUSED = "operator refused: no access to tenant data"
BAD_TOKEN = "invalid or revoked token (unknown tenant, or its tenant was erased)"  # noqa: S105 - a message
MALFORMED = "malformed token: a tenant token is inc_<tenant>.<secret>"


def endpoints(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route of ``app``, included routers flattened (HEAD left out)."""
    out = []
    for route in iter_route_contexts(app.routes):
        out += [(method, str(route.path)) for method in sorted(route.methods or ()) if method != "HEAD"]
    return out


def tenant_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in TENANT_PREFIXES)


def _bearer(scope: Scope) -> str | None:
    """The bearer token of the request, or None when there is no bearer authorisation."""
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def _route_prefix(scope: Scope) -> str:
    """The first path segments only (``/dicom-web/studies``, ``/tenant/v1/subjects``): what follows may be a
    tenant's UIDs or a pseudonym, which the central audit chain (the operator's) must not hold."""
    words = []
    for segment in str(scope.get("path", "")).strip("/").split("/")[:3]:
        if not _WORD.fullmatch(segment):  # a UID, a pseudonym, a number: the route ends here
            break
        words.append(segment)
    return "/" + "/".join(words)


def _source(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class TenantPool:
    """Tenant nodes of this process: opened through :meth:`Central.tenant_node` (refused once a tenant is not
    active), each tenant's log file isolated, and ``claim(node)`` called once per node (the server's
    :func:`incisive.node.serve.recover`)."""

    def __init__(self, central: Central, claim: Any = None) -> None:
        self.central = central
        self._claim = claim
        self._seen: dict[str, Node] = {}
        self._lock = threading.Lock()

    def node(self, tenant_id: str) -> Node:
        with self._lock:
            node = self.central.tenant_node(tenant_id)  # UnknownTenant unless active
            if self._seen.get(tenant_id) is not node:
                isolate_tenant_logs(self.central.dir)
                if self._claim is not None and tenant_id not in self._seen:
                    with tenant_context(tenant_id):
                        self._claim(node)
                self._seen[tenant_id] = node
            return node

    def claimed(self) -> list[Node]:
        with self._lock:
            return list(self._seen.values())


@dataclass
class TenantApps:
    node: Node
    dicomweb: FastAPI
    tenant: FastAPI


class CentralApp:
    """The ASGI application of ``incisive central serve`` (its HTTP listener)."""

    def __init__(self, central: Central, pool: TenantPool | None = None,
                 bundle_source: BundleSource | None = None) -> None:
        self.central = central
        self.pool = pool or TenantPool(central)
        self.bundle_source = bundle_source
        self.throttle = Throttle()  # failures answered here: no token, malformed, unknown or erased tenant
        self.operator = self._operator_app()
        self._apps: dict[str, TenantApps] = {}
        self._lock = threading.Lock()

    def endpoints(self) -> list[tuple[str, str]]:
        """(method, path) of every route this app answers itself (the tenant routes: :meth:`tenant_endpoints`)."""
        return endpoints(self.operator)

    def tenant_endpoints(self, tenant_id: str, reachable: bool = True) -> list[tuple[str, str]]:
        """(method, path) of every route of a tenant's apps; ``reachable``: only those under
        :data:`TENANT_PREFIXES`, which a tenant token reaches (the node app's ``/health`` is this app's)."""
        apps = self.apps(tenant_id)
        found = endpoints(apps.dicomweb) + endpoints(apps.tenant)
        return [e for e in found if tenant_path(e[1])] if reachable else found

    def apps(self, tenant_id: str) -> TenantApps:
        """The tenant's apps, built once (again only when its node was reopened)."""
        node = self.pool.node(tenant_id)
        with self._lock:
            apps = self._apps.get(tenant_id)
            if apps is None or apps.node is not node:
                dicomweb = create_app(node)
                throttle = Throttle()
                dicomweb.state.auth_throttle = throttle
                tenant = create_tenant_app(self.central, tenant_id, node, self.bundle_source, throttle)
                apps = self._apps[tenant_id] = TenantApps(node, dicomweb, tenant)
            return apps

    def drop(self, tenant_id: str) -> None:
        with self._lock:
            self._apps.pop(tenant_id, None)

    # -- ASGI ----------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and tenant_path(str(scope.get("path", ""))):
            await self._to_tenant(scope, receive, send)
        else:
            await self.operator(scope, receive, send)

    def _audit(self, reports: list[Report]) -> None:
        for r in reports:
            try:
                self.central.audit.append("anonymous", "api.auth", target=r.source, outcome="refused",
                                          details=r.details())
            except OSError:
                log.exception("could not audit failed API authentication")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, detail: str,
                      headers: dict[str, str] | None = None) -> None:
        await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)

    async def _to_tenant(self, scope: Scope, receive: Receive, send: Send) -> None:
        token, source = _bearer(scope), _source(scope)
        challenge = {"WWW-Authenticate": "Bearer"}
        if token is None:
            await self._refuse(scope, receive, send, 401, "missing bearer token (a tenant token: "
                               "inc_<tenant>.<secret>)", challenge)
            return
        wait = self.throttle.retry_after(source)
        if wait is not None:
            self._audit(self.throttle.throttled(source, "token"))
            await self._refuse(scope, receive, send, 429, f"too many failed authentication attempts; retry in "
                               f"{wait} s", {"Retry-After": str(wait)})
            return
        if operator_token_ok(self.central, token):
            log.warning("operator token refused on a tenant route (%s %s)", scope.get("method"),
                        str(scope.get("path", "")).split("/")[1])
            self.central.audit.append("operator", "operator.refused", target=_route_prefix(scope),
                                      outcome="refused", details={"reason": OPERATOR_REFUSED,
                                                                  "method": str(scope.get("method", ""))})
            await self._refuse(scope, receive, send, 403, OPERATOR_REFUSED)
            return
        tenant = token_tenant(token)
        if tenant is None:
            self._audit(self.throttle.failed(source, "token", reason="malformed token"))
            await self._refuse(scope, receive, send, 401, MALFORMED, challenge)
            return
        try:
            apps = self.apps(tenant)
        except UnknownTenant:  # unknown, being created, being erased, erased
            self.drop(tenant)
            self._audit(self.throttle.failed(source, "token", reason="no active tenant"))
            await self._refuse(scope, receive, send, 401, BAD_TOKEN, challenge)
            return
        except IncisiveError as exc:  # its catalogue unreachable, its key ring not opening: the operator's to fix
            with tenant_context(tenant):
                log.error("tenant cannot be served: %s", type(exc).__name__)
            await self._refuse(scope, receive, send, 503, "this tenant cannot be served now; retry later")
            return
        self._audit(self.throttle.flush())
        app = apps.dicomweb if str(scope.get("path", "")).startswith(DICOMWEB_PREFIX) else apps.tenant
        with tenant_context(tenant):
            await app(scope, receive, send)

    # -- the operator's routes -----------------------------------------------------------------------------
    def _operator_app(self) -> FastAPI:
        app = FastAPI(title="incisive central", version=__version__, docs_url=None, redoc_url=None,
                      openapi_url=None)
        operator = Depends(self._require_operator)

        @app.get("/health")
        def health() -> dict[str, str]:
            return {"status": "ok", "version": __version__}

        @app.get("/central/v1/tenants", dependencies=[operator])
        def tenants() -> list[dict[str, Any]]:
            from incisive.central.tenants import list_tenants

            return list_tenants(self.central, include_erased=True)

        @app.get("/central/v1/usage", dependencies=[operator])
        def usage() -> list[dict[str, Any]]:
            from incisive.central.tenants import usage as tenant_usage

            rows = tenant_usage(self.central)
            isolate_tenant_logs(self.central.dir)  # usage opened every tenant's node
            return rows

        return app

    def _require_operator(self, request: Request) -> None:
        token = _bearer(request.scope)
        if token is None:
            raise HTTPException(401, "missing bearer token (the operator's: 'incisive central init' printed it)",
                                headers={"WWW-Authenticate": "Bearer"})
        source = _source(request.scope)
        wait = self.throttle.retry_after(source)
        if wait is not None:
            self._audit(self.throttle.throttled(source, "operator-token"))
            raise HTTPException(429, f"too many failed authentication attempts; retry in {wait} s",
                                headers={"Retry-After": str(wait)})
        if not operator_token_ok(self.central, token):
            log.warning("operator route refused: not an operator token")
            self._audit(self.throttle.failed(source, "operator-token", reason="not an operator token"))
            raise HTTPException(401, "not an operator token (tenant tokens cannot list tenants)",
                                headers={"WWW-Authenticate": "Bearer"})
        self._audit(self.throttle.flush())


def create_central_app(central: Central, pool: TenantPool | None = None,
                       bundle_source: BundleSource | None = None) -> CentralApp:
    return CentralApp(central, pool, bundle_source)

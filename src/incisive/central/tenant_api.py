"""A provider's self-service API on its own tenant: ``/tenant/v1/*`` (routed here by :mod:`incisive.central.app`).

Every route works on the tenant the bearer token names, through that tenant's node and its own token store
(:func:`incisive.node.api.auth.require`: 401 for a bad secret, 403 for the wrong role, failures throttled and
audited in the tenant's own audit chain); a ``manager`` token satisfies every role.

| method | path | role | does |
|---|---|---|---|
| GET | /tenant/v1/usage | viewer, uploader | objects, bytes, quarantined, last upload, key age, quotas |
| GET | /tenant/v1/tokens | manager | the tenant's tokens (id, role, label, dates; never a token) |
| POST | /tenant/v1/tokens | manager | ``{role: uploader|viewer, label}`` → a new token, shown once |
| DELETE | /tenant/v1/tokens/{id} | manager | revoke a token |
| GET | /tenant/v1/policy | viewer | the tenant node's policy (:mod:`incisive.node.policy`) |
| PUT | /tenant/v1/policy | manager | change it: the fields of ``incisive node policy set``, same validation and
  ``policy.set`` audit entry; the ``[sandbox]`` table is the operator's on a Central Node (403) |
| GET | /tenant/v1/approvals | viewer | approved bundles (:mod:`incisive.node.fl.approval`) |
| POST | /tenant/v1/approvals | manager | ``{name, version, sha256, share_inference_summary, reviewer}``: the
  bundle as the platform holds it (signed download by the tenant's agent identity), approved only when its sha256
  is the one given |
| DELETE | /tenant/v1/approvals/{name}/{version} | manager | withdraw an approval |
| POST | /tenant/v1/clinical | uploader | ``{rows: [...]}`` already pseudonymised at the provider →
  ``{stored, duplicates}`` |
| POST | /tenant/v1/erase-request | manager | file the provider's erase request (the operator runs the erase) |
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from incisive import __version__
from incisive.central.subjects_api import router as subjects_router
from incisive.common.asgi_limits import BodyLimit
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import CatalogueUnavailable, ConfigError, IncisiveError, InputError
from incisive.common.logging import get_logger
from incisive.federated.bundle import RegisteredBundle
from incisive.node.api.auth import node_of, require
from incisive.node.api.tokens import create_token, list_tokens, revoke_token, token_hash
from incisive.node.catalogue.models import ApiToken
from incisive.node.fl import approval as approvals_mod
from incisive.node.home import Node
from incisive.node.ingest.clinical import MAX_UPLOAD_ROWS, store_pseudonymised_rows
from incisive.node.policy import Policy, load_policy, update_policy

if TYPE_CHECKING:
    from incisive.central.home import Central

log = get_logger("central.tenant_api")
PREFIX = "/tenant/v1"
CLINICAL_PATH = f"{PREFIX}/clinical"
CLINICAL_MAX_BYTES = 16 << 20  # one POST of already pseudonymised rows; the uploader batches below it
OTHER_BODY_BYTES = 64 * 1024
NARROWER_ROLES = ("uploader", "viewer")
# Policy fields a provider sets over HTTP: those of `incisive node policy set` except the sandbox (the operator's)
POLICY_FIELDS = tuple(f for f in Policy.model_fields if f != "sandbox")

# (tenant node, name, version, directory to download into) -> the bundle as the platform holds it
BundleSource = Callable[[Node, str, str, Path], RegisteredBundle]


def platform_bundle(node: Node, name: str, version: str, dest: Path) -> RegisteredBundle:
    """The bundle as the platform holds it, fetched with the tenant's own enrolled agent identity."""
    from incisive.node.fl.review import fetch_platform_bundle

    return fetch_platform_bundle(node.home, name, version, dest)


viewer = Depends(require("viewer", "uploader"))
uploader = Depends(require("uploader"))
reader = Depends(require("viewer"))
manager = Depends(require("manager"))
router = APIRouter(prefix=PREFIX, tags=["tenant"])


def _tenant(request: Request) -> str:
    tenant: str = request.app.state.tenant_id
    return tenant


def _actor(request: Request) -> str:
    """Who acts, for the tenant's audit: the token's id in the tenant's token store (never the token)."""
    header = request.headers.get("authorization", "")
    token = header.partition(" ")[2].strip()
    with node_of(request).catalogue.session() as s:
        row = s.execute(select(ApiToken.id, ApiToken.role).where(ApiToken.token_hash == token_hash(token))).first()
    return f"token:{row[0]} ({row[1]})" if row is not None else "token:?"


def _audit(request: Request, action: str, target: str = "", details: dict[str, Any] | None = None) -> None:
    node = node_of(request)
    NodeAudit(node.home).append(_actor(request), action, target=target, node=node.settings.node_id,
                                details=details)


@router.get("/usage", dependencies=[viewer])
def tenant_usage(request: Request) -> dict[str, Any]:
    """This tenant's row of the operator's ``tenant usage`` (counts only), read from its own catalogue."""
    from incisive.central.tenants import usage

    central: Central = request.app.state.central
    return usage(central, _tenant(request))[0]


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    label: str = Field(default="", max_length=64)


@router.get("/tokens", dependencies=[manager])
def tenant_tokens(request: Request) -> list[dict[str, Any]]:
    return list_tokens(node_of(request))


@router.post("/tokens", dependencies=[manager], status_code=201)
def tenant_new_token(request: Request, body: NewToken) -> dict[str, str]:
    if body.role not in NARROWER_ROLES:
        raise HTTPException(400, f"role must be one of {', '.join(NARROWER_ROLES)} (a manager token is the "
                                 "operator's to issue at 'tenant add')")
    token = create_token(node_of(request), body.role, body.label, tenant=_tenant(request))
    _audit(request, "token.create", details={"role": body.role, "label": body.label})
    return {"token": token, "role": body.role, "label": body.label,
            "note": "shown once; only its sha256 is kept"}


@router.delete("/tokens/{token_id}", dependencies=[manager])
def tenant_revoke_token(request: Request, token_id: int) -> dict[str, Any]:
    node = node_of(request)
    with node.catalogue.session() as s:
        row = s.get(ApiToken, token_id)
        if row is not None and row.role == "manager":
            raise HTTPException(403, "a manager token is revoked by the operator, not over the API")
    if not revoke_token(node, token_id):
        raise HTTPException(404, "no such active token")
    _audit(request, "token.revoke", target=str(token_id))
    return {"revoked": token_id}


@router.get("/policy", dependencies=[reader])
def tenant_policy(request: Request) -> dict[str, Any]:
    return load_policy(node_of(request).home).model_dump()


@router.put("/policy", dependencies=[manager])
def tenant_set_policy(request: Request, changes: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    if "sandbox" in changes or "sandbox_mode" in changes:
        raise HTTPException(403, "on a Central Node the sandbox of bundle code is the operator's setting")
    unknown = sorted(set(changes) - set(POLICY_FIELDS))
    if unknown:
        raise HTTPException(400, f"unknown policy field(s) {', '.join(unknown)[:200]}; known: "
                                 f"{', '.join(POLICY_FIELDS)}")
    node = node_of(request)
    policy = update_policy(node.home, **changes)  # InputError (400) on an invalid value, as the CLI
    _audit(request, "policy.set", details=policy.model_dump())
    return policy.model_dump()


@router.get("/approvals", dependencies=[reader])
def tenant_approvals(request: Request) -> list[dict[str, Any]]:
    return approvals_mod.approvals(node_of(request).home)


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the sha256 the provider reviewed")
    share_inference_summary: bool = False
    reviewer: str = Field(default="", max_length=128)


@router.post("/approvals", dependencies=[manager], status_code=201)
def tenant_approve(request: Request, body: Approval) -> dict[str, Any]:
    node = node_of(request)
    source: BundleSource = request.app.state.bundle_source
    spool = node.home / "tmp"
    spool.mkdir(mode=0o700, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="incisive-bundle-", dir=spool) as tmp:
        bundle = source(node, body.name, body.version, Path(tmp) / "bundle")
        if bundle.digest != body.sha256:
            raise HTTPException(409, f"{body.name}:{body.version} has sha256 {bundle.digest}, not the one given; "
                                     "nothing approved")
        return approvals_mod.approve(node.home, bundle, body.share_inference_summary,
                                     body.reviewer or _actor(request))


@router.delete("/approvals/{name}/{version}", dependencies=[manager])
def tenant_revoke_approval(request: Request, name: str, version: str) -> dict[str, Any]:
    if not approvals_mod.revoke(node_of(request).home, name, version):
        raise HTTPException(404, "not approved")
    return {"revoked": f"{name}:{version}"}


class ClinicalRows(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[dict[str, Any]] = Field(max_length=MAX_UPLOAD_ROWS)


@router.post("/clinical", dependencies=[uploader])
def tenant_clinical(request: Request, body: ClinicalRows) -> dict[str, Any]:
    return dict(store_pseudonymised_rows(node_of(request), body.rows))


@router.post("/erase-request", dependencies=[manager], status_code=202)
def tenant_erase_request(request: Request) -> dict[str, Any]:
    from incisive.central.erase import request_erase

    central: Central = request.app.state.central
    tenant = _tenant(request)
    request_id = request_erase(central, tenant, _actor(request))
    _audit(request, "tenant.erase-request", target=tenant, details={"request_id": request_id})
    return {"request_id": request_id, "tenant": tenant,
            "note": "recorded; the operator runs 'incisive central tenant erase' under this request"}


def create_tenant_app(central: Central, tenant_id: str, node: Node, bundle_source: BundleSource | None = None,
                      throttle: Any = None) -> FastAPI:
    """The ``/tenant/v1`` app of one tenant (the dispatcher routes its requests here)."""
    app = FastAPI(title="incisive tenant", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.node, app.state.central, app.state.tenant_id = node, central, tenant_id
    app.state.bundle_source = bundle_source or platform_bundle
    if throttle is not None:
        app.state.auth_throttle = throttle  # one per tenant, shared with its DICOMweb app
    app.include_router(router)
    app.include_router(subjects_router)  # /tenant/v1/subjects: data-subject requests (issue 20)
    app.add_middleware(BodyLimit, max_bytes=OTHER_BODY_BYTES, per_path={CLINICAL_PATH: CLINICAL_MAX_BYTES},
                       idle_s=node.settings.http_header_timeout_s)

    @app.exception_handler(CatalogueUnavailable)
    async def unavailable(_request: Request, exc: CatalogueUnavailable) -> JSONResponse:
        log.error("catalogue unavailable during a tenant API request")
        return JSONResponse({"detail": "catalogue unavailable; retry later"}, status_code=503)

    @app.exception_handler(IncisiveError)
    async def refused(_request: Request, exc: IncisiveError) -> JSONResponse:
        status = 400 if isinstance(exc, InputError) else 409 if isinstance(exc, ConfigError) else 500
        return JSONResponse({"detail": str(exc)[:500]}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(".".join(str(p) for p in e.get("loc", ())[1:]) or "body" for e in exc.errors()[:5])
        return JSONResponse({"detail": f"invalid request ({where})"}, status_code=400)

    return app

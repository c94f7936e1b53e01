"""Data-subject requests of a Central Node tenant's provider: ``/tenant/v1/subjects/*`` (manager token).

The provider computes the pseudonym with its own key (``incisive compliance subject lookup|erase --patient-id X
--uploader DIR --central URL``: :func:`incisive.node.compliance.subjects.remote_lookup`) and sends only it; the
original identifier and the provider's key never reach the Central Node.

| method | path | role | does |
|---|---|---|---|
| GET | /tenant/v1/subjects/{pseudonym} | manager | counts of what the tenant holds of it (404: not held) |
| POST | /tenant/v1/subjects/{pseudonym}/erase | manager | ``{reason}`` → the erasure record (404: not held);
  journaled and resumable as on a node (:mod:`incisive.node.compliance.subjects`); posting it again finishes
  an interrupted one |

A pseudonym another tenant holds is "not held" here (each tenant reads its own catalogue only). Both routes are
audited in the tenant's own chain with the token's id (``subject.lookup``: the outcome only; ``subject.erase``:
the keyed digest of the pseudonym and the counts), never with the pseudonym.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from incisive.common.audit_log import NodeAudit
from incisive.node.api.auth import node_of, require
from incisive.node.api.tokens import token_hash
from incisive.node.catalogue.models import ApiToken
from incisive.node.compliance import subjects

PREFIX = "/tenant/v1/subjects"
NOT_HELD = "not held: this tenant holds nothing of this pseudonym"
manager = Depends(require("manager"))
router = APIRouter(prefix=PREFIX, tags=["tenant"])


def _actor(request: Request) -> str:
    """The token's id in the tenant's token store (never the token), as in :mod:`incisive.central.tenant_api`."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    with node_of(request).catalogue.session() as s:
        row = s.execute(select(ApiToken.id, ApiToken.role).where(ApiToken.token_hash == token_hash(token))).first()
    return f"token:{row[0]} ({row[1]})" if row is not None else "token:?"


def _pseudonym(pseudonym: str) -> str:
    if not subjects.PSEUDONYM_RE.fullmatch(pseudonym):
        raise HTTPException(400, "not a patient pseudonym (P + 16 base32 characters)")
    return pseudonym


@router.get("/{pseudonym}", dependencies=[manager])
def subject_lookup(request: Request, pseudonym: str) -> dict[str, Any]:
    node = node_of(request)
    found = subjects.lookup_pseudonym(node, _pseudonym(pseudonym))
    NodeAudit(node.home).append(_actor(request), "subject.lookup", node=node.settings.node_id,
                                outcome="ok" if found["held"] else "not-held")
    if not found["held"]:
        raise HTTPException(404, NOT_HELD + (" (erased before)" if found["erasures"] else ""))
    return found


class EraseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=subjects.MAX_REASON)


@router.post("/{pseudonym}/erase", dependencies=[manager])
def subject_erase(request: Request, pseudonym: str, body: EraseBody) -> dict[str, Any]:
    node = node_of(request)
    try:
        record = subjects.erase_pseudonym(node, _pseudonym(pseudonym), body.reason, actor=_actor(request))
    except subjects.NotHeld:
        raise HTTPException(404, NOT_HELD) from None
    return {k: record[k] for k in ("id", "state", "subject", "erased", "started_at", "completed_at", "backups")}

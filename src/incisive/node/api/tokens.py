"""Node-local API tokens (``incisive node token …``, :mod:`incisive.cli.token`).

A token is shown once; the catalogue keeps only its sha256. Roles: ``uploader`` may STOW, ``viewer`` may
QIDO and WADO (least privilege: a PACS pushing images cannot read them back, a reader cannot write), ``manager``
(a Central Node tenant's provider) may do everything its tenant can.

A node's own tokens are ``inc_<secret>``. A Central Node tenant's are ``inc_<tenant id>.<secret>``
(``create_token(..., tenant=id)``): the central HTTP app routes a request by the part before the dot
(:func:`token_tenant`; a node token's secret never holds a dot) and the tenant's own store then checks the hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from sqlalchemy import select

from incisive.common.errors import InputError
from incisive.node.catalogue.models import ApiToken
from incisive.node.catalogue.writer import now
from incisive.node.home import Node

PREFIX = "inc_"
ROLES = ("uploader", "viewer", "manager")
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def token_tenant(token: str) -> str | None:
    """The tenant id a Central Node tenant's token names (``inc_<tenant>.<secret>``); ``None`` for any other."""
    if not token.startswith(PREFIX) or len(token) > 128:
        return None
    tenant, dot, secret = token[len(PREFIX):].partition(".")
    if not dot or not secret or not _TENANT.fullmatch(tenant):
        return None
    return tenant


def create_token(node: Node, role: str, label: str = "", tenant: str | None = None) -> str:
    """A new token for ``role``; returns the plaintext (only its hash is stored).

    ``tenant``: the token of a Central Node tenant, ``inc_<tenant>.<secret>``; else a node token ``inc_<secret>``.
    """
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}")
    if tenant is not None and not _TENANT.fullmatch(tenant):
        raise InputError("tenant id must be lower-case letters, digits and '-'")
    if role == "manager" and tenant is None:
        raise InputError("a manager token belongs to a Central Node tenant (pass its tenant id)")
    secret = secrets.token_urlsafe(32)
    token = f"{PREFIX}{tenant}.{secret}" if tenant is not None else PREFIX + secret
    with node.catalogue.session() as s:
        s.add(ApiToken(token_hash=token_hash(token), role=role, label=label[:64] or None, created_at=now()))
    return token


def token_role(node: Node, token: str) -> str | None:
    """The role of a valid, unrevoked token; ``None`` otherwise."""
    if not token.startswith(PREFIX) or len(token) > 128:
        return None
    tenant = token_tenant(token)
    if tenant is not None and tenant != node.settings.node_id:
        return None  # another tenant's token never counts here, whatever a store holds
    with node.catalogue.session() as s:
        row = s.execute(select(ApiToken.role, ApiToken.revoked_at)
                        .where(ApiToken.token_hash == token_hash(token))).first()
    if row is None or row[1] is not None:
        return None
    return str(row[0])


def revoke_token(node: Node, token_id: int) -> bool:
    with node.catalogue.session() as s:
        row = s.get(ApiToken, token_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = now()
        return True


def list_tokens(node: Node) -> list[dict[str, Any]]:
    """Every token's id, role, label, creation and revocation time (never the token itself)."""
    with node.catalogue.session() as s:
        return [{"id": t.id, "role": t.role, "label": t.label, "created_at": t.created_at,
                 "revoked_at": t.revoked_at} for t in s.scalars(select(ApiToken).order_by(ApiToken.id))]

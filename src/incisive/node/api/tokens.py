"""Node-local API tokens (``incisive node token …``, :mod:`incisive.cli.token`).

A token is shown once; the catalogue keeps only its sha256. Roles: ``uploader`` may STOW, ``viewer`` may
QIDO and WADO (least privilege: a PACS pushing images cannot read them back, a reader cannot write).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import select

from incisive.common.errors import InputError
from incisive.node.catalogue.models import ApiToken
from incisive.node.catalogue.writer import now
from incisive.node.home import Node

PREFIX = "inc_"
ROLES = ("uploader", "viewer")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def create_token(node: Node, role: str, label: str = "") -> str:
    """A new token for ``role``; returns the plaintext (only its hash is stored)."""
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}")
    token = PREFIX + secrets.token_urlsafe(32)
    with node.catalogue.session() as s:
        s.add(ApiToken(token_hash=token_hash(token), role=role, label=label[:64] or None, created_at=now()))
    return token


def token_role(node: Node, token: str) -> str | None:
    """The role of a valid, unrevoked token; ``None`` otherwise."""
    if not token.startswith(PREFIX) or len(token) > 128:
        return None
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

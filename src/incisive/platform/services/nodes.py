"""Node registry: one-time invites, enrolment of an Ed25519 public key, signed-request checks, heartbeats."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, lambda_stmt, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from incisive.common import signing
from incisive.platform.errors import BadRequest, Conflict, Forbidden, Gone, NotFound, Unauthorized
from incisive.platform.models import Invite, Node, SeenNonce
from incisive.platform.services import audit, aware, new_secret, token_hash, utcnow

NODE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
NONCE = re.compile(r"[0-9a-f]{16,64}")
LAST_SEEN_GRANULARITY_S = 2.0


def create_invite(s: Session, name: str, ttl_s: float, actor: str) -> dict[str, Any]:
    name = name.strip()
    if not name or len(name) > 128:
        raise BadRequest("the node name must be 1-128 characters")
    token = new_secret("invite")
    now = utcnow()
    invite = Invite(token_hash=token_hash(token), name=name, created_by=actor, created_at=now,
                    expires_at=now + timedelta(seconds=ttl_s))
    s.add(invite)
    audit.append(s, actor, "node.invite", target=name, details={"ttl_s": ttl_s})
    return {"name": name, "token": token, "expires_at": invite.expires_at.isoformat()}


def enrol(s: Session, token: str, node_id: str, provider: str, public_key: str) -> dict[str, Any]:
    """Spend an invite: register the node's public key. The invite is burnt by one conditional UPDATE
    (``… WHERE used_at IS NULL AND expires_at > now``, rowcount checked), so of concurrent enrolments with one
    invite exactly one wins, on SQLite too (where ``SELECT … FOR UPDATE`` locks nothing)."""
    invite = s.scalar(select(Invite).where(Invite.token_hash == token_hash(token)))
    if invite is None:
        raise Unauthorized("unknown invite token")
    if invite.used_at is not None:
        raise Gone("invite token already used")
    if (aware(invite.expires_at) or utcnow()) <= utcnow():
        raise Gone("invite token expired")
    if not NODE_ID.fullmatch(node_id):
        raise BadRequest("node_id must be lower-case letters, digits and '-' (max 63)")
    try:
        signing.load_public_key(public_key)
    except ValueError:
        raise BadRequest("public_key is not a base64 Ed25519 public key") from None
    if s.scalar(select(Node.id).where(Node.node_id == node_id)) is not None:
        raise Conflict("a node with that id is already enrolled")
    now = utcnow()
    spent = s.execute(update(Invite).where(Invite.id == invite.id, Invite.used_at.is_(None),
                                           Invite.expires_at > now)
                      .values(used_at=now, node_id=node_id).execution_options(synchronize_session=False))
    if not isinstance(spent, CursorResult) or spent.rowcount != 1:
        raise Gone("invite token already used")
    s.add(Node(node_id=node_id, name=invite.name, provider=provider[:128] or None, public_key=public_key,
               enrolled_at=now, health={}))
    try:
        s.flush()
    except IntegrityError:
        raise Conflict("a node with that id is already enrolled") from None
    audit.append(s, f"node:{node_id}", "node.enrol", target=invite.name, node=node_id)
    return {"node_id": node_id, "name": invite.name}


_NONCE_INSERT = {  # built once: this runs on every signed request
    name: insert(SeenNonce.__table__).on_conflict_do_nothing().returning(SeenNonce.id)  # type: ignore[arg-type]
    for name, insert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
}


@dataclass(frozen=True)
class NodeRef:
    """The verified sender of an agent request (light: the hot path loads no JSON columns)."""

    id: int
    node_id: str


def _insert_nonce(s: Session, node_id: str, nonce: str, now: datetime) -> bool:
    """Record a nonce; False when it was already there (a replay). One statement, no savepoint."""
    values = {"node_id": node_id, "nonce": nonce, "seen_at": now}
    dialect = s.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        stmt = _NONCE_INSERT[dialect]
        return s.connection().execute(stmt, values).first() is not None
    try:  # pragma: no cover - other databases
        with s.begin_nested():
            s.add(SeenNonce(**values))
    except IntegrityError:
        return False
    return True


def authenticate_request(s: Session, headers: dict[str, str], method: str, path: str, body: bytes,
                         window_s: float) -> NodeRef:
    """Check a signed agent request; raise Unauthorized/Forbidden (audited by the caller) when anything is off."""
    node_id = headers.get(signing.NODE_HEADER.lower(), "")
    timestamp = headers.get(signing.TIMESTAMP_HEADER.lower(), "")
    nonce = headers.get(signing.NONCE_HEADER.lower(), "")
    signature = headers.get(signing.SIGNATURE_HEADER.lower(), "")
    if not (node_id and timestamp and nonce and signature):
        raise Unauthorized("missing signature headers")
    if not NONCE.fullmatch(nonce) or not timestamp.isdigit() or len(node_id) > 63:
        raise Unauthorized("malformed signature headers")
    row = s.execute(lambda_stmt(lambda: select(Node.id, Node.public_key, Node.revoked_at, Node.last_seen)
                                .where(Node.node_id == node_id))).first()
    if row is None:
        raise Unauthorized("unknown node")
    if row.revoked_at is not None:
        raise Forbidden("node revoked")
    now = utcnow()
    if abs(now.timestamp() - int(timestamp)) > window_s:
        raise Unauthorized("request timestamp outside the accepted window")
    if not signing.verify(row.public_key, signature, method, path, body, timestamp, nonce, node_id):
        raise Unauthorized("bad signature")
    if not _insert_nonce(s, node_id, nonce, now):
        raise Unauthorized("replayed request (nonce already used)")
    seen = aware(row.last_seen)
    if seen is None or (now - seen).total_seconds() > LAST_SEEN_GRANULARITY_S:
        node_pk = row.id
        s.execute(lambda_stmt(lambda: update(Node).where(Node.id == node_pk).values(last_seen=now)))
    return NodeRef(row.id, node_id)


def prune_nonces(s: Session, window_s: float) -> int:
    cutoff = utcnow() - timedelta(seconds=2 * window_s)
    result = s.execute(delete(SeenNonce).where(SeenNonce.seen_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


HEALTH_KEYS = ("disk_free_bytes", "backup_age_days", "readiness", "data", "policy", "sandbox", "breaches")
"""What a heartbeat may report (the rest is dropped); ``sandbox``: ``{"state": ok|off|unavailable, "reason"}``;
``breaches``: the node's open personal-data breaches ``[{"id", "deadline", "hours_left", "notified"}]``."""


def heartbeat(s: Session, ref: NodeRef, payload: dict[str, Any]) -> None:
    node = s.get(Node, ref.id)
    assert node is not None
    node.last_heartbeat = node.last_seen = utcnow()
    version = payload.get("version")
    node.version = str(version)[:32] if version is not None else None
    node.health = {k: payload.get(k) for k in HEALTH_KEYS}


def revoke(s: Session, node_id: str, actor: str) -> None:
    node = s.scalar(select(Node).where(Node.node_id == node_id))
    if node is None:
        raise NotFound("no such node")
    if node.revoked_at is None:
        node.revoked_at = utcnow()
    audit.append(s, actor, "node.revoke", target=node.name, node=node_id)


def status(node: Node, offline_s: float, now: datetime | None = None) -> str:
    if node.revoked_at is not None:
        return "revoked"
    seen = aware(node.last_seen)
    if seen is None:
        return "never-seen"
    return "online" if ((now or utcnow()) - seen).total_seconds() <= offline_s else "offline"


def breach_summary(beats: Any, now: datetime | None = None) -> dict[str, Any] | None:
    """The open breaches a node last reported, summed up: ``{"open", "unnotified", "deadline", "hours_left",
    "overdue"}`` with the earliest deadline still awaiting the authority's notification and the hours left to
    it *now* (not at the heartbeat); None when there is none."""
    if not isinstance(beats, list) or not beats:
        return None
    pending: list[datetime] = []
    for beat in beats:
        if isinstance(beat, dict) and not beat.get("notified"):
            try:
                pending.append(datetime.fromisoformat(str(beat.get("deadline"))))
            except ValueError:
                continue
    deadline = min(pending, default=None)
    left = None if deadline is None else round((deadline - (now or utcnow())).total_seconds() / 3600, 1)
    return {"open": len(beats), "unnotified": len(pending),
            "deadline": deadline.isoformat().replace("+00:00", "Z") if deadline else None,
            "hours_left": left, "overdue": left is not None and left < 0}


def node_dict(node: Node, offline_s: float) -> dict[str, Any]:
    beat = aware(node.last_heartbeat)
    health = node.health or {}
    return {"node_id": node.node_id, "name": node.name, "provider": node.provider,
            "status": status(node, offline_s), "last_heartbeat": beat.isoformat() if beat else None,
            "version": node.version, "enrolled_at": aware(node.enrolled_at).isoformat(),  # type: ignore[union-attr]
            **{k: health.get(k) for k in HEALTH_KEYS}, "breach": breach_summary(health.get("breaches"))}


def list_nodes(s: Session, offline_s: float) -> list[dict[str, Any]]:
    return [node_dict(n, offline_s) for n in s.scalars(select(Node).order_by(Node.node_id))]


def active_nodes(s: Session) -> list[Node]:
    return list(s.scalars(select(Node).where(Node.revoked_at.is_(None)).order_by(Node.node_id)))


def authenticate_known(s: Session, node_id: str) -> None:
    """Re-check the node of an already verified request for revocation (read only)."""
    row = s.execute(lambda_stmt(lambda: select(Node.revoked_at).where(Node.node_id == node_id))).first()
    if row is None:
        raise Unauthorized("unknown node")
    if row.revoked_at is not None:
        raise Forbidden("node revoked")

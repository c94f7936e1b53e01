"""Platform schema (SQLAlchemy 2). Changing a model means adding an Alembic revision under ``../migrations``.

Nothing here is PHI: users are platform accounts, nodes are hospitals' machines, job results hold aggregate
counts that the nodes already passed through disclosure control; federated-learning records hold bundle code,
model parameters and per-node sample counts and scalar metrics only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """A platform account. Accounts are never deleted (disabled instead), so a user name is never reused.

    ``person`` is the stable identifier of the human behind the account (e.g. an institutional e-mail; the user
    name when none is given): privacy budgets belong to the person, so a new account for the same person shares
    them. ``activation_hash``: the SHA-256 of the one-time activation secret, cleared when it is used."""

    __tablename__ = "user_account"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    person: Mapped[str] = mapped_column(String(128), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    dp_budget: Mapped[float] = mapped_column(Float)
    dp_spent: Mapped[float] = mapped_column(Float, default=0.0)
    activation_hash: Mapped[str | None] = mapped_column(String(64))
    activation_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PrivacyBudget(Base):
    """A researcher's privacy budget (a sum of ε) for one project (``""``: queries without a project).

    Keyed on the *person* (``User.person``), not the account: re-creating an account does not reset it.
    Created at the user's ``dp_budget`` (the allowance per project) on first use. ``exhausted``: the budget could
    not pay for a query, or is spent: no query of that project is answered, exact or noisy, until a data-provider
    manager raises the budget."""

    __tablename__ = "privacy_budget"
    __table_args__ = (UniqueConstraint("person", "project"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)  # the account that opened it
    project: Mapped[str] = mapped_column(String(64))
    budget: Mapped[float] = mapped_column(Float)
    spent: Mapped[float] = mapped_column(Float, default=0.0)
    exhausted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """Only the SHA-256 of a token is stored; the token is shown once when it is created."""

    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Invite(Base):
    """A one-time, expiring enrolment token for a node (hash only)."""

    __tablename__ = "invite"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    node_id: Mapped[str | None] = mapped_column(String(63))


class Node(Base):
    __tablename__ = "node"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    provider: Mapped[str | None] = mapped_column(String(128))
    public_key: Mapped[str] = mapped_column(String(64))
    enrolled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_heartbeat: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[str | None] = mapped_column(String(32))
    health: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class SeenNonce(Base):
    """Nonces of signed agent requests inside the signature window (replay protection; pruned)."""

    __tablename__ = "seen_nonce"
    __table_args__ = (UniqueConstraint("node_id", "nonce"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(String(63))
    nonce: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Query(Base):
    __tablename__ = "query"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Job(Base):
    """One unit of work for one node; its id is the idempotency key the node remembers."""

    __tablename__ = "job"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    query_id: Mapped[str | None] = mapped_column(ForeignKey("query.id"), index=True)
    node_id: Mapped[str] = mapped_column(String(63), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | delivered | done | expired
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deliveries: Mapped[int] = mapped_column(Integer, default=0)


class JobResult(Base):
    """The first result a node delivered for a job (later duplicates are acknowledged and dropped)."""

    __tablename__ = "job_result"
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id"), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16))  # ok | refused | error
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    __tablename__ = "audit_entry"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128))
    node: Mapped[str] = mapped_column(String(63))
    outcome: Mapped[str] = mapped_column(String(32))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "actor": self.actor, "action": self.action, "target": self.target,
                "node": self.node, "outcome": self.outcome, "details": self.details, "prev": self.prev,
                "hash": self.hash}


class AuditHead(Base):
    """One row: the last entry's seq and hash (catches a cut tail; locked while appending)."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)


class ModelBundle(Base):
    """A registered model bundle: its code (a tar.gz of the bundle directory), manifest and sha256."""

    __tablename__ = "model_bundle"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    version: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    archive: Mapped[bytes] = mapped_column(LargeBinary)
    registered_by: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FlJob(Base):
    """A federated training or evaluation job run by the platform's SuperLink; ``rounds`` mirrors the ServerApp."""

    __tablename__ = "fl_job"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    op: Mapped[str] = mapped_column(String(16))  # train | evaluate
    bundle_id: Mapped[int] = mapped_column(ForeignKey("model_bundle.id"), index=True)
    source_job: Mapped[str | None] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued | starting | running | completed | failed
    flower_run_id: Mapped[str | None] = mapped_column(String(32))
    nodes: Mapped[dict[str, Any]] = mapped_column(JSON)  # node id -> {status, agent_job, reason}
    server: Mapped[dict[str, Any]] = mapped_column(JSON)  # the ServerApp's last state (phase, round, pooled)
    rounds: Mapped[list[Any]] = mapped_column(JSON)  # one entry per round and phase
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TrainedModel(Base):
    """The final parameters of a completed training job (numpy .npz) with their provenance."""

    __tablename__ = "trained_model"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fl_job_id: Mapped[str] = mapped_column(ForeignKey("fl_job.id"), unique=True)
    bundle_id: Mapped[int] = mapped_column(ForeignKey("model_bundle.id"), index=True)
    weights: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

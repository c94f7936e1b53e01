"""Users, roles, activation secrets and API tokens (stored as SHA-256 only), privacy budgets per person.

Separation of duties (issue 16): nobody makes a token for someone else. An admin creates an account and gets a
one-time *activation secret* for it (shown once, stored hashed, expiring); the user spends it on their first token
(:func:`activate`, one conditional UPDATE) and makes further tokens themself. Tokens expire (``token_ttl_days``),
are listed by id and revoked; a disabled account's tokens are all refused. Accounts are never deleted, so a user
name is never reused; budgets belong to the *person* behind an account (``User.person``); a person has at most one
enabled account and never both an admin and a researcher account. Every change is audited.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from incisive.platform.errors import BadRequest, Conflict, NotFound, Unauthorized
from incisive.platform.models import ApiToken, PrivacyBudget, User
from incisive.platform.rbac import Role
from incisive.platform.services import audit, aware, new_secret, token_hash, utcnow

USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
PERSON = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,127}")
LAST_USED_GRANULARITY_S = 60.0
DEFAULT_TOKEN_TTL_DAYS = 90
DEFAULT_ACTIVATION_TTL_S = 7 * 24 * 3600
EXCLUSIVE = {Role.admin.value: Role.researcher.value, Role.researcher.value: Role.admin.value}


def user_dict(user: User) -> dict[str, Any]:
    return {"username": user.username, "person": user.person, "role": user.role, "disabled": user.disabled,
            "activated": user.activated_at is not None, "created_at": user.created_at.isoformat(),
            "dp_budget": user.dp_budget, "dp_spent": user.dp_spent}


def create_user(s: Session, username: str, role: str, budget: float, actor: str, person: str | None = None,
                activation_ttl_s: float = DEFAULT_ACTIVATION_TTL_S) -> tuple[User, str]:
    """Create an account and its one-time activation secret (returned once; only its hash is kept)."""
    if not USERNAME.fullmatch(username):
        raise BadRequest("username must be 1-64 lower-case letters, digits, '.', '_' or '-'")
    person = (person or username).strip().lower()
    if not PERSON.fullmatch(person):
        raise BadRequest("person must be 1-128 lower-case letters, digits, '.', '_', '@', '+' or '-'")
    try:
        Role(role)
    except ValueError:
        raise BadRequest(f"unknown role; choose one of {', '.join(r.value for r in Role)}") from None
    if s.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict("that user name is taken (user names are never reused, even of disabled accounts)")
    held = s.execute(select(User.role, User.disabled).where(User.person == person)).all()
    if EXCLUSIVE.get(role) in {r for r, _d in held}:
        raise Conflict(f"this person holds a {EXCLUSIVE[role]} account: admins never hold the researcher role")
    if any(not disabled for _r, disabled in held):
        raise Conflict("this person already has an enabled account; disable it first")
    secret = new_secret("act")
    now = utcnow()
    user = User(username=username, person=person, role=role, created_at=now, disabled=False, dp_budget=budget,
                dp_spent=0.0, activation_hash=token_hash(secret),
                activation_expires_at=now + timedelta(seconds=activation_ttl_s))
    s.add(user)
    s.flush()
    audit.append(s, actor, "user.add", target=username, details={"role": role, "person": person})
    return user, secret


def activate(s: Session, username: str, secret: str, ttl_days: int = DEFAULT_TOKEN_TTL_DAYS,
             label: str = "activation") -> dict[str, Any]:
    """Spend an activation secret on the user's first token: one conditional UPDATE with a checked rowcount, so
    concurrent uses make exactly one token."""
    now = utcnow()
    result = s.execute(update(User).where(User.username == username, User.activation_hash == token_hash(secret),
                                          User.activation_expires_at > now, User.disabled.is_(False))
                       .values(activation_hash=None, activation_expires_at=None, activated_at=now)
                       .execution_options(synchronize_session=False))
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        raise Unauthorized("invalid, used or expired activation secret")
    user = get_user(s, username)
    audit.append(s, username, "user.activate", target=username)
    return issue_token(s, user, label, username, ttl_days)


def add_user(s: Session, username: str, role: str, budget: float, actor: str, person: str | None = None,
             ttl_days: int = DEFAULT_TOKEN_TTL_DAYS) -> tuple[User, str]:
    """Create an account and activate it at once (tests, benchmarks): the account and its first token."""
    user, secret = create_user(s, username, role, budget, actor, person)
    return user, str(activate(s, username, secret, ttl_days)["token"])


def get_user(s: Session, username: str) -> User:
    user = s.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound("no such user")
    return user


def token_dict(t: ApiToken) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        v = aware(value)
        return v.isoformat() if v else None
    return {"id": t.id, "label": t.label, "created_at": iso(t.created_at), "expires_at": iso(t.expires_at),
            "last_used_at": iso(t.last_used_at), "revoked_at": iso(t.revoked_at)}


def issue_token(s: Session, user: User, label: str, actor: str, ttl_days: int = DEFAULT_TOKEN_TTL_DAYS
                ) -> dict[str, Any]:
    """A new token for ``user``; callers make sure ``actor`` is the user (nobody mints for someone else)."""
    token = new_secret("inc")
    now = utcnow()
    row = ApiToken(user_id=user.id, token_hash=token_hash(token), label=(label or "")[:64] or None, created_at=now,
                   expires_at=now + timedelta(days=ttl_days))
    s.add(row)
    s.flush()
    audit.append(s, actor, "token.create", target=user.username, details={"token_id": row.id})
    return {"username": user.username, "token": token, **token_dict(row)}


def list_tokens(s: Session, username: str) -> list[dict[str, Any]]:
    user = get_user(s, username)
    return [token_dict(t) for t in s.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                             .order_by(ApiToken.id))]


def revoke_token(s: Session, username: str, token_id: int, actor: str) -> dict[str, Any]:
    user = get_user(s, username)
    row = s.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise NotFound("no such token")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.append(s, actor, "token.revoke", target=username, details={"token_id": token_id})
    return token_dict(row)


def authenticate(s: Session, token: str) -> User:
    now = utcnow()
    row = s.execute(
        select(User, ApiToken.id, ApiToken.revoked_at, ApiToken.expires_at, ApiToken.last_used_at)
        .join(ApiToken, ApiToken.user_id == User.id).where(ApiToken.token_hash == token_hash(token))
    ).first()
    if row is None or row.revoked_at is not None or row[0].disabled:
        raise Unauthorized("invalid or revoked token")
    expires = aware(row.expires_at)
    if expires is None or expires <= now:
        raise Unauthorized("token expired; make a new one")
    used = aware(row.last_used_at)
    if used is None or (now - used).total_seconds() > LAST_USED_GRANULARITY_S:  # one write a minute at most
        s.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now)
                  .execution_options(synchronize_session=False))
    user: User = row[0]
    return user


def list_users(s: Session) -> list[dict[str, Any]]:
    return [user_dict(u) for u in s.scalars(select(User).order_by(User.username))]


def set_disabled(s: Session, username: str, disabled: bool, actor: str) -> dict[str, Any]:
    """Disable (every token refused) or re-enable an account; an account cannot disable itself."""
    user = get_user(s, username)
    if username == actor:
        raise BadRequest("an account cannot disable or enable itself")
    if not disabled and s.scalar(select(User.id).where(User.person == user.person, User.id != user.id,
                                                       User.disabled.is_(False))) is not None:
        raise Conflict("this person already has another enabled account")
    if user.disabled != disabled:
        user.disabled = disabled
        audit.append(s, actor, "user.disable" if disabled else "user.enable", target=username)
    return user_dict(user)


def disable_user(s: Session, username: str, actor: str) -> None:
    set_disabled(s, username, True, actor)


def budget_account(s: Session, user: User, project: str | None) -> PrivacyBudget:
    """The person's budget for a project (``None``/``""``: no project), created at the account's allowance on
    first use. Keyed on ``User.person``: a new account of the same person shares it."""
    name = project or ""
    account = s.scalar(select(PrivacyBudget).where(PrivacyBudget.person == user.person,
                                                   PrivacyBudget.project == name).with_for_update())
    if account is None:
        account = PrivacyBudget(person=user.person, user_id=user.id, project=name, budget=user.dp_budget,
                                spent=0.0, exhausted=False, updated_at=utcnow())
        s.add(account)
        s.flush()
    return account


def _account_dict(a: PrivacyBudget) -> dict[str, Any]:
    return {"project": a.project or None, "budget": a.budget, "spent": round(a.spent, 9),
            "left": round(max(0.0, a.budget - a.spent), 9), "exhausted": a.exhausted}


def budgets(s: Session, username: str) -> dict[str, Any]:
    """The user's allowance per project and every project's budget; ``budget``/``spent``: no project (as before)."""
    user = get_user(s, username)
    accounts = s.scalars(select(PrivacyBudget).where(PrivacyBudget.person == user.person)
                         .order_by(PrivacyBudget.project)).all()
    none = next((a for a in accounts if a.project == ""), None)
    return {"username": user.username, "person": user.person, "allowance": user.dp_budget,
            "budget": none.budget if none else user.dp_budget, "spent": round(none.spent, 9) if none else 0.0,
            "projects": [_account_dict(a) for a in accounts]}


def set_budget(s: Session, username: str, budget: float, actor: str, project: str | None = None) -> dict[str, Any]:
    """A data-provider manager sets a researcher's budget for one project (audited); a budget above what was
    spent lifts the stop on that project."""
    if not 0 <= budget <= 1e6:
        raise BadRequest("budget must be between 0 and 1e6")
    user = get_user(s, username)
    account = budget_account(s, user, project)
    before, was_exhausted = account.budget, account.exhausted
    account.budget, account.updated_at = budget, utcnow()
    if budget - account.spent > 1e-9:
        account.exhausted = False
    audit.append(s, actor, "budget.set", target=username,
                 details={"project": project or None, "budget": budget, "before": before, "spent": account.spent,
                          "reopened": was_exhausted and not account.exhausted, "person": user.person})
    return {**user_dict(user), **_account_dict(account)}

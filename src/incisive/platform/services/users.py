"""Users, roles and API tokens (stored as SHA-256 only), privacy budgets."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incisive.platform.errors import BadRequest, Conflict, NotFound, Unauthorized
from incisive.platform.models import ApiToken, PrivacyBudget, User
from incisive.platform.rbac import Role
from incisive.platform.services import audit, new_secret, token_hash, utcnow

USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def user_dict(user: User) -> dict[str, Any]:
    return {"username": user.username, "role": user.role, "disabled": user.disabled,
            "created_at": user.created_at.isoformat(), "dp_budget": user.dp_budget, "dp_spent": user.dp_spent}


def add_user(s: Session, username: str, role: str, budget: float, actor: str) -> tuple[User, str]:
    """Create a user and a first API token (returned once)."""
    if not USERNAME.fullmatch(username):
        raise BadRequest("username must be 1-64 lower-case letters, digits, '.', '_' or '-'")
    try:
        Role(role)
    except ValueError:
        raise BadRequest(f"unknown role; choose one of {', '.join(r.value for r in Role)}") from None
    if s.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict("a user with that name exists")
    user = User(username=username, role=role, created_at=utcnow(), disabled=False, dp_budget=budget, dp_spent=0.0)
    s.add(user)
    s.flush()
    token = create_token(s, user, "initial", actor)
    audit.append(s, actor, "user.add", target=username, details={"role": role})
    return user, token


def get_user(s: Session, username: str) -> User:
    user = s.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound("no such user")
    return user


def create_token(s: Session, user: User, label: str, actor: str) -> str:
    token = new_secret("inc")
    s.add(ApiToken(user_id=user.id, token_hash=token_hash(token), label=label[:64], created_at=utcnow()))
    audit.append(s, actor, "token.create", target=user.username)
    return token


def authenticate(s: Session, token: str) -> User:
    row = s.execute(
        select(User, ApiToken).join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == token_hash(token))
    ).first()
    if row is None or row[1].revoked_at is not None or row[0].disabled:
        raise Unauthorized("invalid or revoked token")
    return row[0]


def list_users(s: Session) -> list[dict[str, Any]]:
    return [user_dict(u) for u in s.scalars(select(User).order_by(User.username))]


def budget_account(s: Session, user: User, project: str | None) -> PrivacyBudget:
    """The user's budget for a project (``None``/``""``: no project), created at their allowance on first use."""
    name = project or ""
    account = s.scalar(select(PrivacyBudget).where(PrivacyBudget.user_id == user.id, PrivacyBudget.project == name)
                       .with_for_update())
    if account is None:
        account = PrivacyBudget(user_id=user.id, project=name, budget=user.dp_budget, spent=0.0, exhausted=False,
                                updated_at=utcnow())
        s.add(account)
        s.flush()
    return account


def _account_dict(a: PrivacyBudget) -> dict[str, Any]:
    return {"project": a.project or None, "budget": a.budget, "spent": round(a.spent, 9),
            "left": round(max(0.0, a.budget - a.spent), 9), "exhausted": a.exhausted}


def budgets(s: Session, username: str) -> dict[str, Any]:
    """The user's allowance per project and every project's budget; ``budget``/``spent``: no project (as before)."""
    user = get_user(s, username)
    accounts = s.scalars(select(PrivacyBudget).where(PrivacyBudget.user_id == user.id)
                         .order_by(PrivacyBudget.project)).all()
    none = next((a for a in accounts if a.project == ""), None)
    return {"username": user.username, "allowance": user.dp_budget,
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
                          "reopened": was_exhausted and not account.exhausted})
    return {**user_dict(user), **_account_dict(account)}


def disable_user(s: Session, username: str, actor: str) -> None:
    user = get_user(s, username)
    user.disabled = True
    audit.append(s, actor, "user.disable", target=username)

"""Users, roles and API tokens (stored as SHA-256 only), privacy budgets."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from incisive.platform.errors import BadRequest, Conflict, NotFound, Unauthorized
from incisive.platform.models import ApiToken, User
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


def set_budget(s: Session, username: str, budget: float, actor: str) -> dict[str, Any]:
    if not 0 <= budget <= 1e6:
        raise BadRequest("budget must be between 0 and 1e6")
    user = get_user(s, username)
    user.dp_budget = budget
    audit.append(s, actor, "budget.set", target=username, details={"budget": budget})
    return user_dict(user)


def disable_user(s: Session, username: str, actor: str) -> None:
    user = get_user(s, username)
    user.disabled = True
    audit.append(s, actor, "user.disable", target=username)

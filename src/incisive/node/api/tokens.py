"""Node-local API tokens: ``incisive node token create --role uploader|viewer``.

A token is shown once; the catalogue keeps only its sha256. Roles: ``uploader`` may STOW, ``viewer`` may
QIDO and WADO (least privilege: a PACS pushing images cannot read them back, a reader cannot write).
"""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import select

from incisive.common.errors import InputError
from incisive.common.output import console, print_json, table
from incisive.common.settings import resolve_home
from incisive.node.catalogue.models import ApiToken
from incisive.node.catalogue.writer import now
from incisive.node.home import Node

PREFIX = "inc_"
ROLES = ("uploader", "viewer")


class Role(StrEnum):
    uploader = "uploader"
    viewer = "viewer"


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


token_app = typer.Typer(help="Node-local API tokens for DICOMweb.", no_args_is_help=True)
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", "-H", help="Node directory (default: $INCISIVE_NODE or the current directory)"),
]


@token_app.command("create")
def create_cmd(
    role: Annotated[Role, typer.Option(help="uploader (STOW-RS) or viewer (QIDO-RS, WADO-RS)")],
    label: Annotated[str, typer.Option(help="A note on who holds the token")] = "",
    home: HomeOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create a token and print it once (only its hash is kept)."""
    node = Node.open(resolve_home(home))
    token = create_token(node, role.value, label)
    if json_out:
        print_json({"role": role.value, "token": token})
        return
    console.print(f"{role.value} token (shown once, store it safely):")
    console.print(token, markup=False, highlight=False, soft_wrap=True)


@token_app.command("list")
def list_cmd(home: HomeOpt = None, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Tokens (id, role, label, created, revoked) — never the tokens themselves."""
    node = Node.open(resolve_home(home))
    with node.catalogue.session() as s:
        rows = [{"id": t.id, "role": t.role, "label": t.label, "created_at": t.created_at,
                 "revoked_at": t.revoked_at} for t in s.scalars(select(ApiToken).order_by(ApiToken.id))]
    if json_out:
        print_json(rows)
        return
    console.print(table("API tokens", ["id", "role", "label", "created", "revoked"],
                        [(r["id"], r["role"], r["label"], r["created_at"], r["revoked_at"]) for r in rows]))


@token_app.command("revoke")
def revoke_cmd(token_id: Annotated[int, typer.Argument(help="Token id (see 'token list')")],
               home: HomeOpt = None) -> None:
    """Revoke a token; requests with it are refused from then on."""
    node = Node.open(resolve_home(home))
    if not revoke_token(node, token_id):
        raise InputError(f"no active token with id {token_id}")
    console.print(f"token {token_id} revoked")

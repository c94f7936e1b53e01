"""``incisive node token create | list | revoke``: node-local API tokens for DICOMweb.

The logic (hashing, roles, revocation) is :mod:`incisive.node.api.tokens`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from incisive.cli.options import HomeOpt, JsonOpt
from incisive.common.errors import InputError
from incisive.common.output import console, print_json, table
from incisive.common.settings import resolve_home
from incisive.node.api.tokens import create_token, list_tokens, revoke_token
from incisive.node.home import Node
from incisive.node.tenancy import provider_only

app = typer.Typer(help="Node-local API tokens for DICOMweb.", no_args_is_help=True)


class Role(StrEnum):
    uploader = "uploader"
    viewer = "viewer"


@app.command("create")
def create_cmd(
    role: Annotated[Role, typer.Option(help="uploader (STOW-RS) or viewer (QIDO-RS, WADO-RS)")],
    label: Annotated[str, typer.Option(help="A note on who holds the token")] = "",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a token and print it once (only its hash is kept)."""
    node = Node.open(resolve_home(home))
    provider_only(node, "node token create", "the provider: incisive central tenant token create --central URL "
                  "--token MANAGER")
    token = create_token(node, role.value, label)
    if json_out:
        print_json({"role": role.value, "token": token})
        return
    console.print(f"{role.value} token (shown once, store it safely):")
    console.print(token, markup=False, highlight=False, soft_wrap=True)


@app.command("list")
def list_cmd(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Tokens (id, role, label, created, revoked) — never the tokens themselves."""
    rows = list_tokens(Node.open(resolve_home(home)))
    if json_out:
        print_json(rows)
        return
    console.print(table("API tokens", ["id", "role", "label", "created", "revoked"],
                        [(r["id"], r["role"], r["label"], r["created_at"], r["revoked_at"]) for r in rows]))


@app.command("revoke")
def revoke_cmd(token_id: Annotated[int, typer.Argument(help="Token id (see 'token list')")],
               home: HomeOpt = None) -> None:
    """Revoke a token; requests with it are refused from then on."""
    node = Node.open(resolve_home(home))
    if not revoke_token(node, token_id):
        raise InputError(f"no active token with id {token_id}")
    console.print(f"token {token_id} revoked")

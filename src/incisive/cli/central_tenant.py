"""The provider's side of a Central Node tenant, over HTTPS with its manager token (never on the central machine):
``incisive central tenant policy show|set|approvals|approve|revoke``, ``tenant token create|ls|revoke``,
``tenant erase-request`` and ``tenant whoami``. The provider governs its tenant; the operator has no such command.

``--central URL`` (or ``$INCISIVE_CENTRAL_URL``) is the Central Node's HTTP address and ``--token`` (or
``$INCISIVE_TENANT_TOKEN``) the tenant's manager token (``tenant add`` printed it once). A private CA:
``$INCISIVE_CA_FILE``, as for the platform. :mod:`incisive.cli.central` registers these (:func:`register`).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, get_args, get_origin

import typer

from incisive.cli.options import TENANT_TOKEN_ENV, TENANT_TOKEN_HELP, JsonOpt
from incisive.common.errors import InputError
from incisive.common.output import console, print_json, table

URL_ENV, TOKEN_ENV = "INCISIVE_CENTRAL_URL", TENANT_TOKEN_ENV
UrlOpt = Annotated[str | None, typer.Option("--central", help=f"Central Node URL (default: ${URL_ENV})")]
TokenOpt = Annotated[str | None, typer.Option("--token", help=TENANT_TOKEN_HELP, show_default=False)]

policy_app = typer.Typer(help="The tenant's policy and bundle approvals, set by its provider (manager token).",
                         no_args_is_help=True)
token_app = typer.Typer(help="The tenant's narrower tokens (uploader, viewer), made with its manager token.",
                        no_args_is_help=True)


def _client(url: str | None, token: str | None) -> Any:
    from incisive.common.api_client import ApiClient

    where = url or os.environ.get(URL_ENV, "")
    if not where:
        raise InputError(f"give --central URL or set {URL_ENV}")
    return ApiClient(where, token or os.environ.get(TOKEN_ENV, ""), peer="Central Node", token_env=TOKEN_ENV)


def _coerce(name: str, raw: str) -> Any:
    """A policy value from the command line, by the field's type: lists comma-separated, booleans true/false."""
    from incisive.node.policy import Policy

    field = Policy.model_fields.get(name)
    if field is None or name == "sandbox":
        known = ", ".join(f for f in Policy.model_fields if f != "sandbox")
        raise InputError(f"unknown policy field {name!r}; known: {known}")
    kind = field.annotation
    if get_origin(kind) is list:
        return [v.strip() for v in raw.split(",") if v.strip()]
    if kind is bool:
        if raw.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise InputError(f"{name} is true or false, not {raw!r}")
        return raw.lower() in ("true", "yes", "1")
    if kind is int or int in get_args(kind):
        try:
            return int(raw)
        except ValueError:
            raise InputError(f"{name} is a whole number, not {raw!r}") from None
    return raw


def _show_policy(data: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(data)
        return
    for key, value in data.items():
        if key != "sandbox":
            console.print(f"{key:24} {', '.join(map(str, value)) if isinstance(value, list) else value}")


@policy_app.command("show")
def policy_show(central: UrlOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """The tenant's policy as the Central Node applies it."""
    _show_policy(_client(central, token).call("GET", "/tenant/v1/policy"), json_out)


@policy_app.command("set")
def policy_set(changes: Annotated[list[str], typer.Argument(help="FIELD=VALUE, e.g. min_cell_count=10 "
                                                             "projects=lung,breast require_dp=true")],
               central: UrlOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Change fields of the tenant's policy (validated and audited in the tenant's own audit chain)."""
    body: dict[str, Any] = {}
    for item in changes:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"expected FIELD=VALUE, got {item!r}")
        body[name.strip()] = _coerce(name.strip(), raw.strip())
    _show_policy(_client(central, token).call("PUT", "/tenant/v1/policy", json=body), json_out)


@policy_app.command("approvals")
def policy_approvals(central: UrlOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Bundles approved for this tenant (name, version, sha256)."""
    rows = _client(central, token).call("GET", "/tenant/v1/approvals")
    if json_out:
        print_json(rows)
        return
    console.print(table("approved bundles", ["bundle", "sha256", "approved", "by"],
                        [[f"{r.get('name')}:{r.get('version')}", str(r.get("sha256", ""))[:16],
                          str(r.get("approved_at", "")), str(r.get("reviewer", ""))] for r in rows]))


@policy_app.command("approve")
def policy_approve(model: Annotated[str, typer.Argument(help="NAME:VERSION as registered on the platform")],
                   sha256: Annotated[str, typer.Option(help="The sha256 you reviewed (incisive model list "
                                                            "shows it); anything else is refused")],
                   central: UrlOpt = None, token: TokenOpt = None,
                   share_inference_summary: Annotated[bool, typer.Option(
                       help="Let a k-suppressed inference summary of this model leave the tenant")] = False,
                   reviewer: Annotated[str, typer.Option(help="Who reviewed it (recorded)")] = "",
                   json_out: JsonOpt = False) -> None:
    """Approve a bundle for the tenant: the Central Node fetches it from the platform with the tenant's identity,
    re-hashes it and approves it only if it is the sha256 given."""
    name, sep, version = model.partition(":")
    if not sep or not name or not version:
        raise InputError("give the bundle as NAME:VERSION")
    data = _client(central, token).call("POST", "/tenant/v1/approvals", json={
        "name": name, "version": version, "sha256": sha256, "share_inference_summary": share_inference_summary,
        "reviewer": reviewer})
    if json_out:
        print_json(data)
        return
    console.print(f"[green]approved[/] {model} (sha256 {sha256[:16]}…) for this tenant")


@policy_app.command("revoke")
def policy_revoke(model: Annotated[str, typer.Argument(help="NAME:VERSION")], central: UrlOpt = None,
                  token: TokenOpt = None) -> None:
    """Withdraw a bundle approval: later jobs with it are refused."""
    name, _, version = model.partition(":")
    _client(central, token).call("DELETE", f"/tenant/v1/approvals/{name}/{version}")
    console.print(f"revoked {model}")


@token_app.command("create")
def token_create(role: Annotated[str, typer.Option(help="uploader (STOW, clinical rows) or viewer (QIDO/WADO)")],
                 label: Annotated[str, typer.Option(help="What it is for (recorded)")] = "",
                 central: UrlOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """A narrower token for this tenant, printed once."""
    data = _client(central, token).call("POST", "/tenant/v1/tokens", json={"role": role, "label": label})
    if json_out:
        print_json(data)
        return
    console.print(data["token"])


@token_app.command("ls")
def token_ls(central: UrlOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """The tenant's tokens (never the tokens themselves)."""
    rows = _client(central, token).call("GET", "/tenant/v1/tokens")
    if json_out:
        print_json(rows)
        return
    console.print(table("tenant tokens", ["id", "role", "label", "created", "revoked"],
                        [[str(r["id"]), r["role"], r.get("label") or "", str(r["created_at"]),
                          str(r.get("revoked_at") or "")] for r in rows]))


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="Token id (tenant token ls)")], central: UrlOpt = None,
                 token: TokenOpt = None) -> None:
    """Revoke one of the tenant's tokens."""
    _client(central, token).call("DELETE", f"/tenant/v1/tokens/{token_id}")
    console.print(f"revoked token {token_id}")


def erase_request(central: UrlOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """File the provider's request to erase the whole tenant (the operator's erase needs its id)."""
    data = _client(central, token).call("POST", "/tenant/v1/erase-request")
    if json_out:
        print_json(data)
        return
    console.print(f"erase request [bold]{data['request_id']}[/] recorded for tenant {data['tenant']}; the operator "
                  "runs: incisive central tenant erase " f"{data['tenant']} --confirm --request {data['request_id']}")


def whoami(central: UrlOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """The tenant this token belongs to, and its usage (counts only)."""
    data = _client(central, token).call("GET", "/tenant/v1/usage")
    if json_out:
        print_json(data)
        return
    for key, value in data.items():
        console.print(f"{key:16} {value}")


def register(app: typer.Typer) -> None:
    """Add the provider's commands to ``incisive central tenant``."""
    for group in app.registered_groups:
        if group.name == "tenant" and group.typer_instance is not None:
            group.typer_instance.add_typer(policy_app, name="policy")
            group.typer_instance.add_typer(token_app, name="token")
            group.typer_instance.command("erase-request")(erase_request)
            group.typer_instance.command("whoami")(whoami)

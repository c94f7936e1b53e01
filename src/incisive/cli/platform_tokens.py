"""``incisive platform token …``: a user's own platform API tokens.

Nobody makes a token for someone else. ``activate`` spends a new account's one-time activation secret on its
first token; ``create``/``list``/``revoke`` with ``--platform URL --token …`` manage the caller's own tokens over
the API. On the platform machine (``--home``, no URL) ``activate`` bootstraps the first admin, and ``list`` /
``revoke`` with ``--user`` let the operator see and cut off a user's tokens (never make one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from incisive.cli.options import TOKEN_ENV, TOKEN_HELP, JsonOpt, PlatformOpt
from incisive.cli.options import PlatformHomeOpt as HomeOpt
from incisive.common.api_client import ApiClient, RemoteError, verify_setting
from incisive.common.errors import InputError
from incisive.common.output import console, print_json, table
from incisive.platform.home import Platform
from incisive.platform.services import users
from incisive.platform.settings import resolve_platform_home

app = typer.Typer(help="Your platform API tokens: activate an account, create, list, revoke.", no_args_is_help=True)
LOCAL = "local-admin"
OptionalTokenOpt = Annotated[str, typer.Option("--token", envvar=TOKEN_ENV, help=TOKEN_HELP, show_default=False)]
UserOpt = Annotated[str | None, typer.Option("--user", help="On the platform machine: whose tokens (operator)")]


def _platform(home: Path | None) -> Platform:
    return Platform.open(resolve_platform_home(home))


def _show_token(data: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(data)
        return
    console.print(f"token {data['id']} for {data['username']} (shown once, expires {data['expires_at']}):")
    console.print(data["token"], highlight=False)


def _tokens(rows: list[dict[str, Any]], json_out: bool) -> None:
    if json_out:
        print_json(rows)
        return
    console.print(table("Tokens", ["id", "label", "created", "expires", "last used", "revoked"],
                        [(r["id"], r["label"], r["created_at"], r["expires_at"], r["last_used_at"] or "never",
                          r["revoked_at"] or "") for r in rows]))


@app.command("activate")
def activate(
    username: Annotated[str, typer.Argument(help="Your login name")],
    secret: Annotated[str, typer.Option("--secret", help="The one-time activation secret from your admin")],
    label: Annotated[str, typer.Option(help="A note on where the token lives")] = "activation",
    platform_url: PlatformOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Spend your activation secret on your first API token (over the API with --platform; else on this
    platform machine's database, to bootstrap the first admin)."""
    if platform_url:
        try:
            r = httpx.post(platform_url.rstrip("/") + "/api/v1/activate", timeout=60, verify=verify_setting(),
                           json={"username": username, "secret": secret, "label": label})
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach the platform: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise RemoteError(f"platform answered {r.status_code}: {r.json().get('detail', '')}")
        data: dict[str, Any] = r.json()
    else:
        platform = _platform(home)
        with platform.db.session() as s:
            data = users.activate(s, username, secret, platform.settings.token_ttl_days, label)
    _show_token(data, json_out)


@app.command("create")
def create(
    platform_url: PlatformOpt = None,
    token: OptionalTokenOpt = "",
    label: Annotated[str, typer.Option(help="A note on where the token lives")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Another token for yourself (shown once; expires after the platform's token_ttl_days)."""
    if not platform_url:
        raise InputError("give --platform URL (or set INCISIVE_PLATFORM_URL): you make tokens for yourself only")
    _show_token(ApiClient(platform_url, token).call("POST", "/api/v1/me/tokens", json={"label": label}), json_out)


@app.command("list")
def list_cmd(
    user: UserOpt = None,
    platform_url: PlatformOpt = None,
    token: OptionalTokenOpt = "",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Your tokens (--platform, --token) or, on the platform machine, a user's (--user): ids, never values."""
    if user:
        platform = _platform(home)
        with platform.db.session() as s:
            rows = users.list_tokens(s, user)
    elif platform_url:
        rows = ApiClient(platform_url, token).call("GET", "/api/v1/me/tokens")
    else:
        raise InputError("give --platform URL and --token (your tokens) or --user NAME (on the platform machine)")
    _tokens(rows, json_out)


@app.command("revoke")
def revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (from 'token list')")],
    user: UserOpt = None,
    platform_url: PlatformOpt = None,
    token: OptionalTokenOpt = "",
    home: HomeOpt = None,
) -> None:
    """Revoke one of your tokens (--platform, --token) or, on the platform machine, a user's (--user)."""
    if user:
        platform = _platform(home)
        with platform.db.session() as s:
            users.revoke_token(s, user, token_id, LOCAL)
    elif platform_url:
        ApiClient(platform_url, token).call("POST", f"/api/v1/me/tokens/{token_id}/revoke")
    else:
        raise InputError("give --platform URL and --token (your tokens) or --user NAME (on the platform machine)")
    console.print(f"revoked token {token_id}")

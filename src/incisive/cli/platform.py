"""``incisive platform …``: run and administer the platform (local commands on the platform machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from incisive.cli import services as services_cmds
from incisive.cli.options import JsonOpt
from incisive.cli.options import PlatformHomeOpt as HomeOpt
from incisive.cli.platform_tokens import app as token_app
from incisive.common.output import console, err_console, print_json, table
from incisive.platform.home import Platform
from incisive.platform.rbac import Role
from incisive.platform.services import nodes, users
from incisive.platform.settings import resolve_platform_home

app = typer.Typer(help="Run and administer the platform.", no_args_is_help=True)
user_app = typer.Typer(help="Platform accounts: create (activation secret), disable, enable, list.",
                       no_args_is_help=True)
node_app = typer.Typer(help="Enrolment invites and node revocation.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(node_app, name="node")
app.add_typer(token_app, name="token")
app.command("install-services")(services_cmds.platform_install_services)

LOCAL = "local-admin"


def open_platform(home: Path | None) -> Platform:
    return Platform.open(resolve_platform_home(home))


@app.command()
def init(
    home: Annotated[Path, typer.Argument(help="Directory to create the platform in")],
    db: Annotated[str, typer.Option("--db", help="SQLAlchemy URL (default: SQLite in the directory)")] = "",
    ca: Annotated[bool, typer.Option("--ca", help="Also create a private CA (ca/) and an HTTPS certificate "
                                     "from it (tls/server.pem), served by 'platform serve'")] = False,
    names: Annotated[list[str] | None, typer.Option("--name", help="Host name or address the HTTPS "
                                                    "certificate is for (repeat; 127.0.0.1 and localhost are "
                                                    "always in)")] = None,
) -> None:
    """Create a platform directory and its database (and, with --ca, its CA and HTTPS certificate)."""
    from incisive.common.fsio import atomic_write_text
    from incisive.platform import pki
    from incisive.platform.settings import PLATFORM_CONFIG

    platform = Platform.init(home, db_url=db)
    console.print(f"[green]initialised platform[/] at {platform.home} ({platform.db.dialect})")
    if ca:
        platform.settings = pki.init_ca(platform.settings, list(names or []))
        atomic_write_text(platform.home / PLATFORM_CONFIG, platform.settings.to_toml())
        console.print(f"CA: {platform.home / 'ca' / 'ca.pem'} (give it to each node: "
                      "'incisive node enrol URL --token … --ca-file ca.pem'); keep ca/ca.key safe")
        console.print(f"HTTPS certificate: {platform.settings.tls_cert}")


@app.command()
def migrate(home: HomeOpt = None) -> None:
    """Bring the platform database to the latest schema revision."""
    Platform.open(resolve_platform_home(home), check_schema=False).db.migrate()
    console.print("platform database is up to date")


@app.command()
def serve(
    home: HomeOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings)")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate chain to serve HTTPS "
                                                  "with (default: settings' tls_cert)")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert")] = None,
) -> None:
    """Serve the API over HTTPS (--tls-cert/--tls-key or 'platform init --ca'; HSTS on) or plain HTTP for
    loopback and behind a TLS-terminating proxy (docs/deployment.md). OpenAPI docs at /docs."""
    from incisive.platform.server import serve_forever

    platform = open_platform(home)
    update = {k: v for k, v in {"host": host, "port": port, "tls_cert": tls_cert and str(tls_cert),
                                "tls_key": tls_key and str(tls_key)}.items() if v is not None}
    settings = platform.settings.model_copy(update=update)
    scheme = "https" if settings.tls_cert else "http"
    console.print(f"platform listening on {scheme}://{settings.host}:{settings.port}")
    serve_forever(settings, platform.db)


def _created(data: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(data)
        return
    console.print(f"created {data['username']} ({data['role']}, person {data['person']}); one-time activation "
                  f"secret (shown once, expires {data['activation_expires_at']}):")
    console.print(data["activation_secret"], highlight=False)
    console.print(f"give it to {data['username']}, who makes their own first token with "
                  "'incisive platform token activate USER --secret … --platform URL'")


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="Login name (never reused, even after the account is disabled)")],
    role: Annotated[Role, typer.Option(help="admin, dp-manager, researcher or auditor")],
    person: Annotated[str | None, typer.Option(help="The person behind the account (e.g. an institutional "
                                               "e-mail; default: the login name); budgets belong to the person")]
    = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create an account; prints its one-time activation secret (never a token: nobody makes tokens for others)."""
    platform = open_platform(home)
    with platform.db.session() as s:
        user, secret = users.create_user(s, username, role.value, platform.settings.default_dp_budget, LOCAL,
                                         person, platform.settings.activation_ttl_s)
        expires = user.activation_expires_at
        data = {**users.user_dict(user), "activation_secret": secret,
                "activation_expires_at": expires.isoformat() if expires else None}
    _created(data, json_out)


@user_app.command("add", hidden=True)
def user_add(
    username: Annotated[str, typer.Argument(help="Login name")],
    role: Annotated[Role, typer.Option(help="admin, dp-manager, researcher or auditor")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deprecated spelling of 'user create'."""
    err_console.print("note: 'platform user add' is now 'platform user create'; it prints an activation secret")
    user_create(username, role, None, home, json_out)


def _set_disabled(username: str, disabled: bool, home: Path | None, json_out: bool) -> None:
    platform = open_platform(home)
    with platform.db.session() as s:
        data = users.set_disabled(s, username, disabled, LOCAL)
    if json_out:
        print_json(data)
        return
    console.print(f"{username} {'disabled: every token refused' if disabled else 'enabled'}")


@user_app.command("disable")
def user_disable(username: str, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Disable an account: every one of its tokens is refused until it is enabled again."""
    _set_disabled(username, True, home, json_out)


@user_app.command("enable")
def user_enable(username: str, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Enable a disabled account again."""
    _set_disabled(username, False, home, json_out)


@user_app.command("list")
def user_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Users and roles."""
    platform = open_platform(home)
    with platform.db.session() as s:
        rows = users.list_users(s)
    if json_out:
        print_json(rows)
        return
    console.print(table("Users", ["user", "person", "role", "activated", "disabled", "ε budget", "ε spent"],
                        [(r["username"], r["person"], r["role"], r["activated"], r["disabled"], r["dp_budget"],
                          r["dp_spent"]) for r in rows]))


@node_app.command("invite")
def node_invite(
    name: Annotated[str, typer.Argument(help="Name of the hospital / node")],
    ttl_hours: Annotated[float | None, typer.Option(help="Hours until the token expires")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A one-time enrolment token for a node (give it to the node's operator over a trusted channel)."""
    platform = open_platform(home)
    ttl = ttl_hours * 3600 if ttl_hours else platform.settings.invite_ttl_s
    with platform.db.session() as s:
        data = nodes.create_invite(s, name, ttl, LOCAL)
    if json_out:
        print_json(data)
        return
    console.print(f"invite for {data['name']} (expires {data['expires_at']}):")
    console.print(data["token"], highlight=False)
    console.print("on the node: incisive node enrol <platform URL> --token <token>")


@node_app.command("revoke")
def node_revoke(node_id: str, home: HomeOpt = None) -> None:
    """Cut a node off at once: every signed request from it is refused from now on."""
    platform = open_platform(home)
    with platform.db.session() as s:
        nodes.revoke(s, node_id, LOCAL)
    console.print(f"revoked {node_id}")


def nodes_table(rows: list[dict[str, Any]]) -> Any:
    def ready(r: dict[str, Any]) -> str:
        x = r.get("readiness") or {}
        return f"{x.get('pass', 0)} pass/{x.get('warn', 0)} warn/{x.get('fail', 0)} fail" if x else ""

    def data(r: dict[str, Any]) -> str:
        d = r.get("data") or {}
        return f"{d.get('patients', 0)} patients, {d.get('studies', 0)} studies" if d else ""

    def sandbox(r: dict[str, Any]) -> str:
        x = r.get("sandbox") or {}
        return str(x.get("state", "")) + (f": {x['reason']}" if x.get("reason") else "")

    def breach(r: dict[str, Any]) -> str:
        x = r.get("breach") or {}
        if not x:
            return ""
        if x.get("overdue"):
            return f"[red]{x['open']} open, OVERDUE[/]"
        if x.get("hours_left") is None:
            return f"{x['open']} open, notified"
        left = x["hours_left"]
        return f"{x['open']} open, {left:.0f} h left" if left >= 1 else f"{x['open']} open, {left:.1f} h left"

    return table("Nodes", ["node", "name", "status", "last heartbeat", "version", "data", "readiness",
                           "backup age (d)", "sandbox", "breach"],
                 [(r["node_id"], r["name"], r["status"], r["last_heartbeat"] or "never", r["version"], data(r),
                   ready(r), r["backup_age_days"], sandbox(r), breach(r)) for r in rows])


@app.command("nodes")
def list_nodes(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Enrolled nodes: status, last heartbeat, version, data summary, readiness summary, open breaches (the
    earliest 72 h deadline still awaiting the authority's notification)."""
    platform = open_platform(home)
    with platform.db.session() as s:
        rows = nodes.list_nodes(s, platform.settings.node_offline_s)
    if json_out:
        print_json(rows)
        return
    console.print(nodes_table(rows))

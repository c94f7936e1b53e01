"""``incisive platform …``: run and administer the platform (local commands on the platform machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from incisive.cli import services as services_cmds
from incisive.cli.options import JsonOpt
from incisive.cli.options import PlatformHomeOpt as HomeOpt
from incisive.common.output import console, print_json, table
from incisive.platform.home import Platform
from incisive.platform.rbac import Role
from incisive.platform.services import nodes, users
from incisive.platform.settings import resolve_platform_home

app = typer.Typer(help="Run and administer the platform.", no_args_is_help=True)
user_app = typer.Typer(help="Platform users and their API tokens.", no_args_is_help=True)
node_app = typer.Typer(help="Enrolment invites and node revocation.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(node_app, name="node")
app.command("install-services")(services_cmds.platform_install_services)

LOCAL = "local-admin"


def open_platform(home: Path | None) -> Platform:
    return Platform.open(resolve_platform_home(home))


@app.command()
def init(
    home: Annotated[Path, typer.Argument(help="Directory to create the platform in")],
    db: Annotated[str, typer.Option("--db", help="SQLAlchemy URL (default: SQLite in the directory)")] = "",
) -> None:
    """Create a platform directory and its database."""
    platform = Platform.init(home, db_url=db)
    console.print(f"[green]initialised platform[/] at {platform.home} ({platform.db.dialect})")


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
) -> None:
    """Serve the API (OpenAPI docs at /docs). Put it behind a TLS-terminating proxy for real deployments."""
    from incisive.platform.server import serve_forever

    platform = open_platform(home)
    settings = platform.settings.model_copy(update={k: v for k, v in {"host": host, "port": port}.items()
                                                    if v is not None})
    console.print(f"platform listening on http://{settings.host}:{settings.port}")
    serve_forever(settings, platform.db)


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="Login name")],
    role: Annotated[Role, typer.Option(help="admin, dp-manager, researcher or auditor")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add a user; prints their API token once (only its hash is stored)."""
    platform = open_platform(home)
    with platform.db.session() as s:
        user, token = users.add_user(s, username, role.value, platform.settings.default_dp_budget, LOCAL)
        data = {**users.user_dict(user), "token": token}
    if json_out:
        print_json(data)
        return
    console.print(f"added {data['username']} ({data['role']}); API token (shown once): {token}")


@user_app.command("token")
def user_token(username: str, home: HomeOpt = None) -> None:
    """Issue another API token for a user (shown once)."""
    platform = open_platform(home)
    with platform.db.session() as s:
        token = users.create_token(s, users.get_user(s, username), "cli", LOCAL)
    console.print(token, highlight=False)


@user_app.command("list")
def user_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Users and roles."""
    platform = open_platform(home)
    with platform.db.session() as s:
        rows = users.list_users(s)
    if json_out:
        print_json(rows)
        return
    console.print(table("Users", ["user", "role", "disabled", "ε budget", "ε spent"],
                        [(r["username"], r["role"], r["disabled"], r["dp_budget"], r["dp_spent"]) for r in rows]))


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

    return table("Nodes", ["node", "name", "status", "last heartbeat", "version", "data", "readiness",
                           "backup age (d)"],
                 [(r["node_id"], r["name"], r["status"], r["last_heartbeat"] or "never", r["version"], data(r),
                   ready(r), r["backup_age_days"]) for r in rows])


@app.command("nodes")
def list_nodes(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Enrolled nodes: status, last heartbeat, version, data summary, readiness summary."""
    platform = open_platform(home)
    with platform.db.session() as s:
        rows = nodes.list_nodes(s, platform.settings.node_offline_s)
    if json_out:
        print_json(rows)
        return
    console.print(nodes_table(rows))

"""``incisive central agent`` and ``incisive central tenant enrol``: each tenant dials out to the platform as its
own node (:mod:`incisive.central.agent`). :mod:`incisive.cli.central` registers them (:func:`register`)."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer

from incisive.cli.options import InviteTokenOpt, JsonOpt
from incisive.common.output import console, print_json

CENTRAL_HELP = "Central Node directory (default: $INCISIVE_CENTRAL or the current directory)"
CentralOpt = Annotated[Path | None, typer.Option("--central", "-C", help=CENTRAL_HELP)]


def enrol(
    tenant: Annotated[str, typer.Argument(help="Tenant id (see 'incisive central tenant ls')")],
    url: Annotated[str, typer.Argument(help="Platform URL, e.g. https://platform.example:8000")],
    token: InviteTokenOpt,
    central: CentralOpt = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA the platform's certificate must chain to "
                                                "(pinned for this tenant)")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Enrol one tenant with the platform as its own node (its own Ed25519 and Flower keys), with the invite token
    the platform issued for that provider."""
    from incisive.central.agent import enrol_tenant
    from incisive.central.home import Central
    from incisive.central.settings import resolve_central

    opened = Central.open(resolve_central(central))
    data = enrol_tenant(opened, tenant, url, token, ca_file=ca_file)
    if json_out:
        print_json(data)
        return
    console.print(f"[green]enrolled[/] tenant {tenant} as node {data['node_id']} with {data['platform_url']}")
    console.print("start every tenant's link with: incisive central agent")


def agent(central: CentralOpt = None) -> None:
    """Run the outbound link of every enrolled tenant (one agent each, one process): long-poll for jobs,
    heartbeats, SuperNodes for FL jobs. Picks up newly enrolled tenants; stops erased ones. SIGTERM/Ctrl-C stops."""
    from incisive.central.agent import CentralAgent, enrolled
    from incisive.central.home import Central
    from incisive.central.settings import resolve_central

    opened = Central.open(resolve_central(central))
    runner = CentralAgent(opened)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    console.print(f"central agent for {len(enrolled(opened))} enrolled tenant(s)")
    with contextlib.suppress(KeyboardInterrupt):  # run() stops every tenant's agent on its way out
        runner.run()


def register(app: typer.Typer) -> None:
    """Add ``agent`` to ``incisive central`` and ``enrol`` to its ``tenant`` group."""
    app.command("agent")(agent)
    for group in app.registered_groups:
        if group.name == "tenant" and group.typer_instance is not None:
            group.typer_instance.command("enrol")(enrol)

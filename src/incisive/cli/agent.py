"""``incisive node enrol | agent``: the node's side of the platform link."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from incisive.cli.options import HomeOpt, InviteTokenOpt, JsonOpt
from incisive.common.output import console, print_json
from incisive.common.settings import resolve_home
from incisive.node.home import Node


def enrol(
    url: Annotated[str, typer.Argument(help="Platform URL, e.g. https://platform.example:8000")],
    token: InviteTokenOpt,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA the platform's certificate must chain to "
                                                "(e.g. its 'platform init --ca' ca/ca.pem); pinned: from then on "
                                                "the only CA trusted. Default: the system store")] = None,
) -> None:
    """Create this node's keys (Ed25519 for the agent, EC for Flower) and register the public keys."""
    from incisive.node.agent_link import enrol as do_enrol

    node = Node.open(resolve_home(home))
    data = do_enrol(node, url, token, ca_file=ca_file)
    if json_out:
        print_json(data)
        return
    console.print(f"[green]enrolled[/] as {data['node_id']} ({data['name']}) with {data['platform_url']}")
    console.print("start the link with: incisive node agent")


def agent(home: HomeOpt = None) -> None:
    """Run the outbound link: long-poll for jobs, heartbeats, reconnect with backoff. Stops on SIGTERM/Ctrl-C."""
    from incisive.node.agent import Agent

    node = Node.open(resolve_home(home))
    runner = Agent(node)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    console.print(f"agent for {runner.settings.node_id} → {runner.settings.platform_url}")
    try:
        runner.run()
    except KeyboardInterrupt:
        runner.stop()

"""``incisive node …``: the data manager's commands (one function per sub-command, logic in services)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from incisive.common.output import console, print_json
from incisive.common.settings import resolve_home
from incisive.node.home import Node

app = typer.Typer(help="Run and manage a federated node.", no_args_is_help=True)

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", "-H", help="Node directory (default: $INCISIVE_NODE or the current directory)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")]


@app.command()
def init(
    home: Annotated[Path, typer.Argument(help="Directory to create the node in")],
    provider: Annotated[str, typer.Option(help="Data provider (hospital) name")],
    node_id: Annotated[str | None, typer.Option(help="Node identifier (default: from the provider name)")] = None,
    catalogue_url: Annotated[
        str, typer.Option(help="SQLAlchemy URL of the catalogue (default: SQLite in the node directory)")
    ] = "",
    json_out: JsonOpt = False,
) -> None:
    """Create a node: settings, a new pseudonym key, object store, quarantine and catalogue."""
    node = Node.init(home, provider=provider, node_id=node_id, catalogue_url=catalogue_url)
    info = {"home": str(node.home), "node_id": node.settings.node_id, "provider": node.settings.provider,
            "catalogue": node.catalogue.dialect, "key_file": str(node.key_path)}
    if json_out:
        print_json(info)
        return
    console.print(f"[green]initialised node[/] {info['node_id']} at {info['home']}")
    console.print(f"pseudonym key: {info['key_file']} (mode 0600; keep it on this machine, back it up offline)")


def open_node(home: Path | None) -> Node:
    return Node.open(resolve_home(home))

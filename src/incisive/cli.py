"""The ``incisive`` command: one sub-command group per role (node, demo-data, …)."""

from __future__ import annotations

import sys

import typer

from incisive import __version__
from incisive.common.errors import IncisiveError
from incisive.common.output import err_console
from incisive.demo.cli import demo_data
from incisive.federated.cli import fl_app, infer, model_app
from incisive.node.backup.cli import app as backup_app
from incisive.node.cli import app as node_app
from incisive.platform.audit_cli import app as audit_app
from incisive.platform.cli import app as platform_app
from incisive.platform.client_cli import app as query_app

app = typer.Typer(
    name="incisive",
    help="Federated repository node for pseudonymised cancer-imaging and clinical data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(node_app, name="node")
app.add_typer(backup_app, name="backup")
app.add_typer(platform_app, name="platform")
app.add_typer(query_app, name="query")
app.add_typer(audit_app, name="audit")
app.command("demo-data")(demo_data)
app.add_typer(fl_app, name="fl")
app.add_typer(model_app, name="model")
app.command("infer")(infer)


@app.command()
def version() -> None:
    """Print the software version."""
    typer.echo(__version__)


def main() -> None:
    try:
        app()
    except IncisiveError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)

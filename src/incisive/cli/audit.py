"""``incisive audit verify|export``: the hash-chained audit log of a platform or a node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from incisive.cli.options import AuditNodeOpt, AuditPlatformOpt, JsonOpt
from incisive.common.audit import Verification
from incisive.common.errors import InputError
from incisive.common.exit_codes import ExitCode
from incisive.common.output import console, print_json

app = typer.Typer(help="Verify or export an audit log (platform or node).", no_args_is_help=True)


def _verify(platform: Path | None, node: Path | None) -> Verification:
    if (platform is None) == (node is None):
        raise InputError("give exactly one of --platform DIR or --node DIR")
    if node is not None:
        from incisive.common.audit_log import NodeAudit
        from incisive.node.home import Node

        return NodeAudit(Node.open(node, check_schema=False).home).verify()
    from incisive.platform.home import Platform
    from incisive.platform.services import audit

    assert platform is not None
    with Platform.open(platform).db.session() as s:
        return audit.verify(s)


def _entries(platform: Path | None, node: Path | None) -> Iterator[dict[str, Any]]:
    if (platform is None) == (node is None):
        raise InputError("give exactly one of --platform DIR or --node DIR")
    if node is not None:
        from incisive.common.audit_log import NodeAudit
        from incisive.node.home import Node

        yield from NodeAudit(Node.open(node, check_schema=False).home).entries()
        return
    from incisive.platform.home import Platform
    from incisive.platform.services import audit

    assert platform is not None
    with Platform.open(platform).db.session() as s:
        yield from audit.entries(s)


@app.command()
def verify(platform: AuditPlatformOpt = None, node: AuditNodeOpt = None, json_out: JsonOpt = False) -> None:
    """Check every entry's hash, sequence and link; exit 1 when an entry was edited, removed or reordered."""
    result = _verify(platform, node)
    if json_out:
        print_json(result.as_dict())
    elif result.ok:
        console.print(f"[green]audit log intact[/]: {result.entries} entries")
    else:
        console.print(f"[red]audit log broken[/] ({result.entries} entries read):")
        for problem in result.problems:
            console.print(f"  {problem}", highlight=False)
    if not result.ok:
        raise typer.Exit(ExitCode.PROBLEMS)


@app.command()
def export(platform: AuditPlatformOpt = None, node: AuditNodeOpt = None,
           out: Annotated[Path | None, typer.Option(help="Write JSON lines here instead of stdout")] = None) -> None:
    """Export the log as JSON lines (one entry per line, with its hash)."""
    lines = (json.dumps(e, sort_keys=True) + "\n" for e in _entries(platform, node))
    if out is None:
        for line in lines:
            typer.echo(line, nl=False)
        return
    with out.open("w", encoding="utf-8") as fh:
        fh.writelines(lines)

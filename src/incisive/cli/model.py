"""``incisive model register | list``: model bundles in the local registry, or the platform's (see :mod:`.mode`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from incisive.cli import fl_output
from incisive.cli.mode import choose
from incisive.cli.options import JsonOpt, LocalOpt, PlatformOpt, TokenOpt, WorkspaceOpt
from incisive.common.output import console, print_json, table
from incisive.federated.service import Workspace

app = typer.Typer(help="Model bundles in the registry.", no_args_is_help=True)


@app.command("register")
def register(ctx: typer.Context, bundle: Path, name: Annotated[str | None, typer.Option()] = None,
             version: Annotated[str | None, typer.Option()] = None, workspace: WorkspaceOpt = None,
             platform: PlatformOpt = None, token: TokenOpt = "", local: LocalOpt = False,
             json_out: JsonOpt = False) -> None:
    """Register a bundle directory (manifest.json + task.py); prints its sha256. With --platform: upload it to the
    platform's registry (admin token)."""
    api = choose(ctx, platform, token, local, {"--workspace": workspace})
    if api is not None:
        fl_output.print_bundle(api.register(bundle, name, version), json_out)
        return
    b = Workspace.default(workspace).registry.register(bundle, name, version)
    if json_out:
        print_json({"ref": b.manifest.ref, "sha256": b.digest, "registered_at": b.registered_at})
        return
    console.print(f"registered {b.manifest.ref} sha256 {b.digest}")


@app.command("list")
def list_models(ctx: typer.Context, workspace: WorkspaceOpt = None, platform: PlatformOpt = None,
                token: TokenOpt = "", local: LocalOpt = False, json_out: JsonOpt = False) -> None:
    """Registered bundles."""
    api = choose(ctx, platform, token, local, {"--workspace": workspace})
    if api is not None:
        fl_output.print_models(api.models(), json_out)
        return
    rows = [(b.manifest.ref, b.manifest.kind, ",".join(b.manifest.job_types), b.digest, b.registered_at)
            for b in Workspace.default(workspace).registry.list()]
    if json_out:  # the whole sha256: it is what an approval names
        print_json([dict(zip(["model", "kind", "job_types", "sha256", "registered_at"], r, strict=True))
                    for r in rows])
        return
    rows = [(*r[:3], r[3][:16], r[4]) for r in rows]
    console.print(table("Models", ["model", "kind", "job types", "sha256", "registered"], rows))

"""``incisive node policy approve|revoke``: a node's data-protection manager approves bundles by their sha256.

Kept apart from :mod:`incisive.federated.cli` so that the node CLI does not import PyTorch or Flower.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from incisive.common.output import console
from incisive.common.settings import resolve_home
from incisive.federated import approval as approvals_mod
from incisive.federated.bundle import parse_ref

HomeOpt = Annotated[Path | None, typer.Option("--home", "-H", help="Node directory")]
WsOpt = Annotated[Path | None, typer.Option("--workspace", "-w", help="Registry + jobs ($INCISIVE_FL_HOME)")]


def approve(model: Annotated[str, typer.Argument(help="NAME:VERSION")], home: HomeOpt = None,
            share_inference_summary: bool = False, workspace: WsOpt = None) -> None:
    """Approve a registered bundle (by its sha256) for this node."""
    from incisive.federated.service import Workspace

    name, version, _ = parse_ref(model)
    bundle = Workspace.default(workspace).registry.get(name, version)
    entry = approvals_mod.approve(resolve_home(home), bundle, share_inference_summary)
    console.print(f"approved {name}:{version} sha256 {entry['sha256']}")


def revoke(model: Annotated[str, typer.Argument(help="NAME:VERSION")], home: HomeOpt = None) -> None:
    """Withdraw an approval; jobs with this bundle are refused from now on."""
    name, version, _ = parse_ref(model)
    done = approvals_mod.revoke(resolve_home(home), name, version)
    console.print("revoked" if done else "was not approved")

"""``incisive node policy approve|revoke``: a node's data-protection manager approves bundles by their sha256.

Kept apart from :mod:`incisive.federated.cli` so that the node CLI does not import PyTorch or Flower.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from incisive.common.errors import InputError
from incisive.common.output import console
from incisive.common.settings import resolve_home
from incisive.federated.bundle import RegisteredBundle, parse_ref, read_manifest
from incisive.node.fl import approval as approvals_mod

HomeOpt = Annotated[Path | None, typer.Option("--home", "-H", help="Node directory")]
WsOpt = Annotated[Path | None, typer.Option("--workspace", "-w", help="Registry + jobs ($INCISIVE_FL_HOME)")]


def approve(model: Annotated[str, typer.Argument(help="NAME:VERSION")], home: HomeOpt = None,
            share_inference_summary: bool = False, workspace: WsOpt = None,
            from_platform: Annotated[bool, typer.Option(
                help="Download the bundle from the platform this node is enrolled with (signed request)")] = False,
            sha256: Annotated[str | None, typer.Option(help="Approve only if the bundle's sha256 is this")] = None,
            ) -> None:
    """Approve a registered bundle (by its sha256) for this node: from the local registry (--workspace), or as
    the platform holds it (--from-platform); either way the files are re-hashed here."""
    name, version, _ = parse_ref(model)
    node_home = resolve_home(home)
    with tempfile.TemporaryDirectory(prefix="incisive-bundle-") as tmp:
        if from_platform:
            bundle = _from_platform(node_home, name, version, Path(tmp) / "bundle")
        else:
            from incisive.federated.service import Workspace

            bundle = Workspace.default(workspace).registry.get(name, version)
        if sha256 and sha256 != bundle.digest:
            raise InputError(f"{name}:{version} has sha256 {bundle.digest}, not the one given; nothing approved")
        entry = approvals_mod.approve(node_home, bundle, share_inference_summary)
    console.print(f"approved {name}:{version} sha256 {entry['sha256']}")


def _from_platform(home: Path, name: str, version: str, dest: Path) -> RegisteredBundle:
    from incisive.common import signing
    from incisive.node.agent_link import AgentSettings, SignedClient, agent_key_path
    from incisive.node.fl.supernodes import fetch_bundle
    from incisive.node.home import Node

    node = Node.open(home, check_schema=False)
    client = SignedClient(AgentSettings.load(node.home), signing.read_private_key(agent_key_path(node)))
    try:
        digest = fetch_bundle(client, name, version, dest)
    finally:
        client.close()
    manifest = read_manifest(dest)
    if (manifest.name, manifest.version) != (name, version):
        raise InputError(f"the platform sent {manifest.ref}, not {name}:{version}")
    return RegisteredBundle(manifest, digest, dest, "")


def revoke(model: Annotated[str, typer.Argument(help="NAME:VERSION")], home: HomeOpt = None) -> None:
    """Withdraw an approval; jobs with this bundle are refused from now on."""
    name, version, _ = parse_ref(model)
    done = approvals_mod.revoke(resolve_home(home), name, version)
    console.print("revoked" if done else "was not approved")

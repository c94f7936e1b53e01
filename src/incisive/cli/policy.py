"""``incisive node policy show | set | approve | revoke``: what this node shares, enforced at the node.

A node's data-protection manager approves model bundles by their sha256 (from the local registry or as the
platform holds it; re-hashed here either way). No PyTorch or Flower import: the node CLI stays light.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from incisive.cli.options import HomeOpt, JsonOpt, WorkspaceOpt
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import InputError
from incisive.common.output import console, print_json, table
from incisive.common.settings import resolve_home
from incisive.federated.bundle import RegisteredBundle, parse_ref, read_manifest
from incisive.node.fl import approval as approvals_mod
from incisive.node.home import Node
from incisive.node.policy import load_policy, update_policy

app = typer.Typer(help="What this node shares (enforced here; the platform cannot override it).",
                  no_args_is_help=True)


def _show(data: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(data)
        return
    console.print(table("Node policy", ["setting", "value"],
                        [(k, ", ".join(v) if isinstance(v, list) else v) for k, v in data.items()]))


@app.command("show")
def policy_show(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """The policy in force."""
    node = Node.open(resolve_home(home), check_schema=False)
    _show(load_policy(node.home).model_dump(), json_out)


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


@app.command("set")
def policy_set(
    participate: Annotated[bool | None, typer.Option("--participate/--no-participate",
                                                     help="Take part in federated jobs at all")] = None,
    k: Annotated[int | None, typer.Option("--k", "--min-cell-count", help="Minimum cell count (default 5)")] = None,
    job_types: Annotated[str | None, typer.Option(help="Accepted job types, comma-separated")] = None,
    researchers: Annotated[str | None, typer.Option(help="Allowed researchers ('' = any)")] = None,
    projects: Annotated[str | None, typer.Option(help="Allowed projects ('' = any)")] = None,
    min_subset: Annotated[int | None, typer.Option(
        help="A filtered set and the rest of the node must each have this many units (default 10)")] = None,
    overlap_control: Annotated[bool | None, typer.Option(
        "--overlap-control/--no-overlap-control",
        help="Withhold cells whose units differ from an answered cell's by 1 to k-1 (default on)")] = None,
    rounding: Annotated[int | None, typer.Option(
        help="Publish counts randomly rounded to this base, e.g. 5 (0 = exact, the default)")] = None,
    require_dp: Annotated[bool | None, typer.Option(
        "--require-dp/--no-require-dp", help="Answer noisy (epsilon) counts only (default off)")] = None,
    share_inference_summary: Annotated[bool | None, typer.Option(
        "--share-inference-summary/--no-share-inference-summary",
        help="Let a k-suppressed summary of inference runs go to the platform (results always stay here)")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Change the policy (unnamed settings stay as they are)."""
    node = Node.open(resolve_home(home), check_schema=False)
    policy = update_policy(node.home, participate=participate, min_cell_count=k, job_types=_csv(job_types),
                           researchers=_csv(researchers), projects=_csv(projects), min_subset=min_subset,
                           overlap_control=overlap_control, rounding=rounding, require_dp=require_dp,
                           share_inference_summary=share_inference_summary)
    NodeAudit(node.home).append("local", "policy.set", node=node.settings.node_id, details=policy.model_dump())
    _show(policy.model_dump(), json_out)


@app.command("approve")
def approve(model: Annotated[str, typer.Argument(help="NAME:VERSION")], home: HomeOpt = None,
            share_inference_summary: bool = False, workspace: WorkspaceOpt = None,
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


@app.command("revoke")
def revoke(model: Annotated[str, typer.Argument(help="NAME:VERSION")], home: HomeOpt = None) -> None:
    """Withdraw an approval; jobs with this bundle are refused from now on."""
    name, version, _ = parse_ref(model)
    done = approvals_mod.revoke(resolve_home(home), name, version)
    console.print("revoked" if done else "was not approved")

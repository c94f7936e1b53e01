"""``incisive node policy show | set | review | approve | approvals | revoke``: what this node shares, enforced
at the node.

A node's data-protection manager reviews a model bundle (declared inputs and outputs, code, diff against the last
approved version: :mod:`incisive.node.fl.review`) and approves it by its sha256 (from the local registry or as
the platform holds it; re-hashed here either way). No PyTorch or Flower import: the node CLI stays light.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from incisive.cli.options import HomeOpt, JsonOpt, WorkspaceOpt
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import InputError
from incisive.common.output import console, print_json, table
from incisive.common.settings import resolve_home
from incisive.federated.bundle import RegisteredBundle, Registry, parse_ref
from incisive.node.fl import approval as approvals_mod
from incisive.node.fl import review as review_mod
from incisive.node.home import Node
from incisive.node.policy import load_policy, update_policy
from incisive.node.tenancy import provider_only

app = typer.Typer(help="What this node shares (enforced here; the platform cannot override it).",
                  no_args_is_help=True)


PROVIDER_POLICY = "the provider: incisive central tenant policy set|approve|revoke --central URL --token MANAGER"

def _show(data: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(data)
        return
    console.print(table("Node policy", ["setting", "value"],
                        [(k, ", ".join(v) if isinstance(v, list) else
                          ", ".join(f"{a}={b}" for a, b in v.items()) if isinstance(v, dict) else v)
                         for k, v in data.items()]))


@app.command("show")
def policy_show(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """The policy in force."""
    node = Node.open(resolve_home(home), check_schema=False)
    _show(load_policy(node.home).model_dump(), json_out)
    if not json_out:  # --json stays the policy document; 'approvals --json' lists the approvals
        _show_approvals(approvals_mod.approvals(node.home), False)


def _show_approvals(entries: list[dict[str, Any]], json_out: bool) -> None:
    if json_out:
        print_json(entries)
        return
    console.print(table("Approved bundles", ["bundle", "sha256", "approved", "reviewer", "reviewed"],
                        [(f"{e['name']}:{e['version']}", e["sha256"][:12], e["approved_at"], e.get("reviewer"),
                          e.get("reviewed_at") or "-") for e in entries]))


@app.command("approvals")
def policy_approvals(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """The bundles approved at this node, with who approved them and when their sha256 was reviewed."""
    node = Node.open(resolve_home(home), check_schema=False)
    _show_approvals(approvals_mod.approvals(node.home), json_out)


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
    withheld_fields: Annotated[str | None, typer.Option(
        help="Clinical fields and labels never given to bundle code, comma-separated ('' = none)")] = None,
    bundle_modalities: Annotated[str | None, typer.Option(
        help="Modalities whose pixels bundles may declare, e.g. CT,MR ('' = any)")] = None,
    require_review: Annotated[bool | None, typer.Option(
        "--require-review/--no-require-review",
        help="Approve only a sha256 reviewed here with 'node policy review' (default off)")] = None,
    sandbox: Annotated[str | None, typer.Option(
        "--sandbox", help="How bundle code runs: bwrap (default; refused where unavailable) or off (no cage: "
        "audited, a failing 'node check' row); limits: the [sandbox] table of policy.toml")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Change the policy (unnamed settings stay as they are)."""
    node = Node.open(resolve_home(home), check_schema=False)
    provider_only(node, "node policy set", PROVIDER_POLICY)
    policy = update_policy(node.home, participate=participate, min_cell_count=k, job_types=_csv(job_types),
                           researchers=_csv(researchers), projects=_csv(projects), min_subset=min_subset,
                           overlap_control=overlap_control, rounding=rounding, require_dp=require_dp,
                           share_inference_summary=share_inference_summary,
                           withheld_fields=_csv(withheld_fields), bundle_modalities=_csv(bundle_modalities),
                           require_review=require_review, sandbox_mode=sandbox)
    NodeAudit(node.home).append("local", "policy.set", node=node.settings.node_id, details=policy.model_dump())
    _show(policy.model_dump(), json_out)


ReviewerOpt = Annotated[str | None, typer.Option(
    help="Who reviews / approves (recorded with the approval and in the audit log; default: the OS user)")]
FromPlatformOpt = Annotated[bool, typer.Option(
    help="Download the bundle from the platform this node is enrolled with (signed request)")]


def _registry(workspace: Path | None) -> Registry:
    """The local registry of ``Workspace.default(workspace)`` without importing the FL service (kept light)."""
    root = workspace or Path(os.environ.get("INCISIVE_FL_HOME", "~/.incisive/fl"))
    return Registry(root.expanduser().resolve() / "registry")


@contextmanager
def _bundle(node_home: Path, name: str, version: str, from_platform: bool,
            workspace: Path | None) -> Iterator[tuple[RegisteredBundle, str]]:
    """The bundle as it would be approved, and where it came from (``registry`` or ``platform``)."""
    with tempfile.TemporaryDirectory(prefix="incisive-bundle-") as tmp:
        if from_platform:
            yield review_mod.fetch_platform_bundle(node_home, name, version, Path(tmp) / "bundle"), "platform"
        else:
            yield _registry(workspace).get(name, version), "registry"


@app.command("review")
def review(model: Annotated[str, typer.Argument(help="NAME:VERSION")], home: HomeOpt = None,
           workspace: WorkspaceOpt = None, from_platform: FromPlatformOpt = False, reviewer: ReviewerOpt = None,
           json_out: JsonOpt = False) -> None:
    """Show a bundle as it would be approved: manifest, declared inputs and outputs, sha256, every file's code,
    and the diff against the last version of it approved here. The review is recorded (who, when, sha256)."""
    name, version, _ = parse_ref(model)
    node_home = Node.open(resolve_home(home), check_schema=False).home
    with _bundle(node_home, name, version, from_platform, workspace) as (bundle, source):
        data = review_mod.build_review(node_home, bundle, source)
        data["reviewed"] = approvals_mod.record_review(node_home, bundle, source, reviewer)
    if json_out:
        print_json(data)
    else:
        review_mod.render(data, console)


@app.command("approve")
def approve(model: Annotated[str, typer.Argument(help="NAME:VERSION")], home: HomeOpt = None,
            share_inference_summary: bool = False, workspace: WorkspaceOpt = None,
            from_platform: FromPlatformOpt = False,
            sha256: Annotated[str | None, typer.Option(help="Approve only if the bundle's sha256 is this")] = None,
            reviewer: ReviewerOpt = None) -> None:
    """Approve a registered bundle (by its sha256) for this node: from the local registry (--workspace), or as
    the platform holds it (--from-platform); either way the files are re-hashed here. Refused when the bundle
    declares inputs this node's policy withholds."""
    name, version, _ = parse_ref(model)
    node_home = resolve_home(home)
    provider_only(Node.open(node_home, check_schema=False), "node policy approve", PROVIDER_POLICY)
    with _bundle(node_home, name, version, from_platform, workspace) as (bundle, _source):
        if sha256 and sha256 != bundle.digest:
            raise InputError(f"{name}:{version} has sha256 {bundle.digest}, not the one given; nothing approved")
        entry = approvals_mod.approve(node_home, bundle, share_inference_summary, reviewer)
    console.print(f"approved {name}:{version} sha256 {entry['sha256']} (reviewer {entry['reviewer']}, "
                  f"reviewed {entry['reviewed_at'] or 'not recorded'})", markup=False)


@app.command("revoke")
def revoke(model: Annotated[str, typer.Argument(help="NAME:VERSION")], home: HomeOpt = None) -> None:
    """Withdraw an approval; jobs with this bundle are refused from now on."""
    name, version, _ = parse_ref(model)
    provider_only(Node.open(resolve_home(home), check_schema=False), "node policy revoke", PROVIDER_POLICY)
    done = approvals_mod.revoke(resolve_home(home), name, version)
    console.print("revoked" if done else "was not approved")

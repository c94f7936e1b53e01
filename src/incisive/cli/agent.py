"""``incisive node enrol | agent | policy``: the node's side of the platform link."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from incisive.common.audit_log import NodeAudit
from incisive.common.output import console, print_json, table
from incisive.common.settings import resolve_home
from incisive.node.home import Node
from incisive.node.policy import load_policy, update_policy

HomeOpt = Annotated[Path | None, typer.Option("--home", "-H", help="Node directory (default: $INCISIVE_NODE or "
                                                                   "the current directory)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
policy_app = typer.Typer(help="What this node shares (enforced here; the platform cannot override it).",
                         no_args_is_help=True)


def enrol(
    url: Annotated[str, typer.Argument(help="Platform URL, e.g. https://platform.example:8000")],
    token: Annotated[str, typer.Option(help="One-time invite token from 'incisive platform node invite'")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create this node's Ed25519 key and register its public key with the platform."""
    from incisive.node.agent_link import enrol as do_enrol

    node = Node.open(resolve_home(home))
    data = do_enrol(node, url, token)
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


def _show(data: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(data)
        return
    console.print(table("Node policy", ["setting", "value"],
                        [(k, ", ".join(v) if isinstance(v, list) else v) for k, v in data.items()]))


@policy_app.command("show")
def policy_show(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """The policy in force."""
    node = Node.open(resolve_home(home), check_schema=False)
    _show(load_policy(node.home).model_dump(), json_out)


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


@policy_app.command("set")
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

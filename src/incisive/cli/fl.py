"""``incisive fl train | status | evaluate | plot``: federated training and evaluation on Flower.

Platform mode (``--platform URL`` or ``$INCISIVE_PLATFORM_URL``, nodes by id with ``--nodes``): the platform's
SuperLink runs the job and each node's agent starts its SuperNode. Local mode (``--local``, or no platform URL;
``--node NAME=DIR``): a SuperLink and one SuperNode per node directory on this machine. See :mod:`.mode`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live

from incisive.cli import fl_output
from incisive.cli.mode import choose, require_local
from incisive.cli.options import JsonOpt, LocalOpt, PlatformOpt, TokenOpt, WorkspaceOpt
from incisive.common.errors import InputError
from incisive.common.exit_codes import ExitCode
from incisive.common.output import console, print_json, table
from incisive.federated.jobs import Job
from incisive.federated.remote import Platform, nodes_arg
from incisive.federated.service import JobOptions, Workspace
from incisive.federated.service import evaluate as run_evaluate
from incisive.federated.service import train as run_train

app = typer.Typer(help="Federated training and evaluation on Flower.", no_args_is_help=True)
NodesOpt = Annotated[list[str] | None, typer.Option("--node", "-n", help="Local mode: NAME=NODE_DIR (repeat), or a "
                                                                        "node dir")]
NodeIdsOpt = Annotated[str | None, typer.Option("--nodes", help="Platform mode: all (default) or node ids a,b")]


def _nodes(items: list[str] | None) -> dict[str, Path]:
    out = {}
    for item in items or []:
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        p = Path(path).expanduser().resolve()
        out[name or p.name] = p
    if not out:
        raise InputError("give at least one --node NAME=NODE_DIR")
    return out


@app.command("train")
def train(ctx: typer.Context, model: Annotated[str, typer.Option(help="NAME:VERSION")], node: NodesOpt = None,
          nodes: NodeIdsOpt = None, rounds: int = 10, strategy: str = "fedavg", proximal_mu: float = 0.1,
          dp_epsilon: Annotated[float, typer.Option(help="DP-SGD target epsilon for the whole job (0 = off)")] = 0.0,
          secagg: bool = False, round_timeout: float = 120.0, min_nodes: int | None = None,
          workspace: WorkspaceOpt = None, platform: PlatformOpt = None, token: TokenOpt = "", local: LocalOpt = False,
          wait: Annotated[bool, typer.Option(help="Platform mode: follow the job until it ends")] = True,
          json_out: JsonOpt = False) -> None:
    """Train across nodes. Platform mode: the platform's SuperLink runs it, each node's agent starts its
    SuperNode. Local mode (--node): starts a SuperLink and a SuperNode per node directory here."""
    api = choose(ctx, platform, token, local, {"--node": node, "--workspace": workspace})
    if api is not None:
        started = api.start("train", model, nodes_arg(nodes), rounds=rounds, strategy=strategy,
                            proximal_mu=proximal_mu, dp_epsilon=dp_epsilon, secagg=secagg,
                            round_timeout=round_timeout, min_nodes=min_nodes)
        _after_start(api, started, wait, json_out)
        return
    require_local(api, {"--nodes": nodes})
    job = run_train(Workspace.default(workspace), model, _nodes(node), JobOptions(
        rounds=rounds, strategy=strategy, proximal_mu=proximal_mu, dp_epsilon=dp_epsilon, secagg=secagg,
        round_timeout=round_timeout, min_nodes=min_nodes),
        progress=lambda s: None)
    if json_out:
        print_json({"job": job.spec, "server": job.server_state(), "rounds": job.rounds()})
    else:
        _status_table(job)
    if job.spec.get("status") != "completed":
        raise typer.Exit(ExitCode.PROBLEMS)


def _after_start(api: Platform, job: dict[str, object], wait: bool, json_out: bool) -> None:
    if not json_out:
        console.print(f"job {job['id']} queued on the platform")
    final = fl_output.follow(api, str(job["id"]), json_out) if wait else job
    fl_output.show(final if wait else job, json_out)
    if wait and final["status"] != "completed":
        raise typer.Exit(ExitCode.PROBLEMS)


def _status_table(job: Job) -> None:
    spec = job.spec
    console.print(f"job {job.id} · {spec.get('model')} · {spec.get('strategy')} · {spec.get('status')}")
    rows = []
    for r in job.rounds():
        nodes = ", ".join(str(n.get("node")) for n in r["nodes"])
        pooled = r.get("pooled") or {}
        rows.append((r["round"], r["phase"], nodes, len(r["failures"]),
                     f"{pooled['auc']:.4f}" if "auc" in pooled else "", f"{pooled['accuracy']:.4f}"
                     if "accuracy" in pooled else ""))
    console.print(table("Rounds", ["round", "phase", "nodes", "failures", "pooled AUC", "pooled acc"], rows))


@app.command("status")
def status(ctx: typer.Context, job: str, follow: bool = False, workspace: WorkspaceOpt = None,
           platform: PlatformOpt = None, token: TokenOpt = "", local: LocalOpt = False,
           json_out: JsonOpt = False) -> None:
    """Per-round metrics and per-node participation; --follow refreshes until the job ends."""
    api = choose(ctx, platform, token, local, {"--workspace": workspace})
    if api is not None:
        data = fl_output.follow(api, job, json_out) if follow else api.job(job)
        fl_output.show(data, json_out)
        if follow and data["status"] != "completed":
            raise typer.Exit(ExitCode.PROBLEMS)
        return
    j = Workspace.default(workspace).jobs.get(job)
    if json_out:
        print_json({"job": j.spec, "server": j.server_state(), "rounds": j.rounds()})
        return
    if not follow:
        _status_table(j)
        return
    with Live(console=console, refresh_per_second=2) as live:
        while True:
            state = j.server_state()
            live.update(f"job {j.id} phase={state.get('phase')} round={state.get('round')} "
                        f"pooled={state.get('pooled', {})}")
            if state.get("finished") or j.spec.get("status") in ("completed", "failed"):
                break
            time.sleep(1)
    _status_table(j)


@app.command("evaluate")
def evaluate(ctx: typer.Context, model: Annotated[str, typer.Option(help="NAME:VERSION@JOB")], node: NodesOpt = None,
             nodes: NodeIdsOpt = None, round_timeout: float = 120.0, workspace: WorkspaceOpt = None,
             platform: PlatformOpt = None, token: TokenOpt = "", local: LocalOpt = False, wait: bool = True,
             json_out: JsonOpt = False) -> None:
    """Federated evaluation of a trained model: per-node and pooled metrics."""
    api = choose(ctx, platform, token, local, {"--node": node, "--workspace": workspace})
    if api is not None:
        _after_start(api, api.start("evaluate", model, nodes_arg(nodes), round_timeout=round_timeout), wait,
                     json_out)
        return
    require_local(api, {"--nodes": nodes})
    job = run_evaluate(Workspace.default(workspace), model, _nodes(node), JobOptions(round_timeout=round_timeout))
    _status_table(job)


@app.command("plot")
def plot(ctx: typer.Context, job: str, out: Path | None = None, workspace: WorkspaceOpt = None,
         platform: PlatformOpt = None, token: TokenOpt = "", local: LocalOpt = False) -> None:
    """Write per-round metrics as JSON and a PNG plot."""
    api = choose(ctx, platform, token, local, {"--workspace": workspace})
    if api is not None:
        json_path, png_path = fl_output.plot(api, job, out)
        console.print(f"wrote {json_path} and {png_path}")
        return
    from incisive.federated import curves

    json_path, png_path = curves.plot(Workspace.default(workspace).jobs.get(job), out)
    console.print(f"wrote {json_path} and {png_path}")

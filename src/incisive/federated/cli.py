"""``incisive fl …`` (train, status, evaluate, plot), ``incisive model …`` (register, list), ``incisive infer``.

Two paths: with ``--platform URL`` (or ``$INCISIVE_PLATFORM_URL``) and no ``--node`` / ``--workspace``, the
platform's registry and SuperLink run the job and the nodes' agents start the SuperNodes
(:mod:`incisive.federated.remote`); otherwise the local workspace and launcher (offline / development mode).

``incisive node policy approve|revoke`` live in :mod:`incisive.node.fl.approval_cli` (light imports)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live

from incisive.common.errors import InputError
from incisive.common.exit_codes import ExitCode
from incisive.common.output import console, print_json, table
from incisive.common.settings import resolve_home
from incisive.federated import curves, remote_cli
from incisive.federated.bundle import parse_ref
from incisive.federated.jobs import Job
from incisive.federated.remote import Platform, nodes_arg
from incisive.federated.remote_cli import PlatformOpt, TokenOpt
from incisive.federated.service import JobOptions, Workspace
from incisive.federated.service import evaluate as run_evaluate
from incisive.federated.service import train as run_train

fl_app = typer.Typer(help="Federated training and evaluation on Flower.", no_args_is_help=True)
model_app = typer.Typer(help="Model bundles in the registry.", no_args_is_help=True)
WsOpt = Annotated[Path | None, typer.Option("--workspace", "-w", help="Registry + jobs ($INCISIVE_FL_HOME)")]
NodesOpt = Annotated[list[str] | None, typer.Option("--node", "-n", help="Local mode: NAME=NODE_DIR (repeat), or a "
                                                                        "node dir")]
NodeIdsOpt = Annotated[str | None, typer.Option("--nodes", help="Platform mode: all (default) or node ids a,b")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def _remote(url: str | None, token: str, local: object = None) -> Platform | None:
    """The platform client when a platform URL is given and nothing local is."""
    return Platform(url, token) if url and not local else None


def _nodes(items: list[str] | None) -> dict[str, Path]:
    out = {}
    for item in items or []:
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        p = Path(path).expanduser().resolve()
        out[name or p.name] = p
    if not out:
        raise InputError("give at least one --node NAME=NODE_DIR")
    return out


@model_app.command("register")
def register(bundle: Path, name: Annotated[str | None, typer.Option()] = None,
             version: Annotated[str | None, typer.Option()] = None, workspace: WsOpt = None,
             platform: PlatformOpt = None, token: TokenOpt = "", json_out: JsonOpt = False) -> None:
    """Register a bundle directory (manifest.json + task.py); prints its sha256. With --platform: upload it to the
    platform's registry (admin token)."""
    api = _remote(platform, token, workspace)
    if api is not None:
        remote_cli.print_bundle(api.register(bundle, name, version), json_out)
        return
    b = Workspace.default(workspace).registry.register(bundle, name, version)
    if json_out:
        print_json({"ref": b.manifest.ref, "sha256": b.digest, "registered_at": b.registered_at})
        return
    console.print(f"registered {b.manifest.ref} sha256 {b.digest}")


@model_app.command("list")
def list_models(workspace: WsOpt = None, platform: PlatformOpt = None, token: TokenOpt = "",
                json_out: JsonOpt = False) -> None:
    """Registered bundles."""
    api = _remote(platform, token, workspace)
    if api is not None:
        remote_cli.print_models(api.models(), json_out)
        return
    rows = [(b.manifest.ref, b.manifest.kind, ",".join(b.manifest.job_types), b.digest[:16], b.registered_at)
            for b in Workspace.default(workspace).registry.list()]
    if json_out:
        print_json([dict(zip(["model", "kind", "job_types", "sha256", "registered_at"], r, strict=True))
                    for r in rows])
        return
    console.print(table("Models", ["model", "kind", "job types", "sha256", "registered"], rows))


@fl_app.command("train")
def train(model: Annotated[str, typer.Option(help="NAME:VERSION")], node: NodesOpt = None, nodes: NodeIdsOpt = None,
          rounds: int = 10, strategy: str = "fedavg", proximal_mu: float = 0.1,
          dp_epsilon: Annotated[float, typer.Option(help="DP-SGD target epsilon for the whole job (0 = off)")] = 0.0,
          secagg: bool = False, round_timeout: float = 120.0, min_nodes: int | None = None,
          workspace: WsOpt = None, platform: PlatformOpt = None, token: TokenOpt = "",
          wait: Annotated[bool, typer.Option(help="Platform mode: follow the job until it ends")] = True,
          json_out: JsonOpt = False) -> None:
    """Train across nodes. Platform mode: the platform's SuperLink runs it, each node's agent starts its
    SuperNode. Local mode (--node): starts a SuperLink and a SuperNode per node directory here."""
    api = _remote(platform, token, node or workspace)
    if api is not None:
        started = api.start("train", model, nodes_arg(nodes), rounds=rounds, strategy=strategy,
                            proximal_mu=proximal_mu, dp_epsilon=dp_epsilon, secagg=secagg,
                            round_timeout=round_timeout, min_nodes=min_nodes)
        _after_start(api, started, wait, json_out)
        return
    ws = Workspace.default(workspace)
    job = run_train(ws, model, _nodes(node), JobOptions(
        rounds=rounds, strategy=strategy, proximal_mu=proximal_mu, dp_epsilon=dp_epsilon, secagg=secagg,
        round_timeout=round_timeout, min_nodes=min_nodes),
        progress=lambda s: None)
    _status_table(job)


def _after_start(api: Platform, job: dict[str, object], wait: bool, json_out: bool) -> None:
    if not json_out:
        console.print(f"job {job['id']} queued on the platform")
    final = remote_cli.follow(api, str(job["id"]), json_out) if wait else job
    remote_cli.show(final if wait else job, json_out)
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


@fl_app.command("status")
def status(job: str, follow: bool = False, workspace: WsOpt = None, platform: PlatformOpt = None,
           token: TokenOpt = "", json_out: JsonOpt = False) -> None:
    """Per-round metrics and per-node participation; --follow refreshes until the job ends."""
    api = _remote(platform, token, workspace)
    if api is not None:
        data = remote_cli.follow(api, job, json_out) if follow else api.job(job)
        remote_cli.show(data, json_out)
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


@fl_app.command("evaluate")
def evaluate(model: Annotated[str, typer.Option(help="NAME:VERSION@JOB")], node: NodesOpt = None,
             nodes: NodeIdsOpt = None, round_timeout: float = 120.0, workspace: WsOpt = None,
             platform: PlatformOpt = None, token: TokenOpt = "", wait: bool = True, json_out: JsonOpt = False) -> None:
    """Federated evaluation of a trained model: per-node and pooled metrics."""
    api = _remote(platform, token, node or workspace)
    if api is not None:
        _after_start(api, api.start("evaluate", model, nodes_arg(nodes), round_timeout=round_timeout), wait,
                     json_out)
        return
    job = run_evaluate(Workspace.default(workspace), model, _nodes(node), JobOptions(round_timeout=round_timeout))
    _status_table(job)


@fl_app.command("plot")
def plot(job: str, out: Path | None = None, workspace: WsOpt = None, platform: PlatformOpt = None,
         token: TokenOpt = "") -> None:
    """Write per-round metrics as JSON and a PNG plot."""
    api = _remote(platform, token, workspace)
    if api is not None:
        json_path, png_path = remote_cli.plot(api, job, out)
        console.print(f"wrote {json_path} and {png_path}")
        return
    j = Workspace.default(workspace).jobs.get(job)
    json_path, png_path = curves.plot(j, out)
    console.print(f"wrote {json_path} and {png_path}")


def infer(model: Annotated[str, typer.Option(help="NAME:VERSION@JOB")],
          node: Annotated[str | None, typer.Option("--node", help="Node directory (local), or the node's id at the "
                                                                  "platform (with --platform)")] = None,
          series: Annotated[list[str] | None, typer.Option(help="Series UID(s); default all")] = None,
          workspace: WsOpt = None, platform: PlatformOpt = None, token: TokenOpt = "",
          project: Annotated[str | None, typer.Option(help="Platform mode: the project it is for")] = None,
          timeout: Annotated[float, typer.Option(help="Platform mode: wait this long for the node (s)")] = 600.0,
          json_out: JsonOpt = False) -> None:
    """Score a node's data with a trained model; results are written at the node, only a summary is printed.
    With --platform and a node id: the platform asks that node's agent, which answers with the summary only if
    its policy allows."""
    from incisive.node.fl import inference
    from incisive.node.home import Node

    name, version, job_id = parse_ref(model)
    if not job_id:
        raise InputError("inference needs a trained model: NAME:VERSION@JOB")
    local_dir = node is not None and Path(node).expanduser().is_dir()
    api = _remote(platform, token, workspace or local_dir or node is None)
    if api is not None and node is not None:
        request = api.infer(model, node, series, project)
        if not json_out:
            console.print(f"inference {request['id']} queued for {node}")
        done = remote_cli.wait_inference(api, str(request["id"]), node, timeout, json_out)
        remote_cli.print_inference(done, json_out)
        if done["status"] != "completed":
            raise typer.Exit(ExitCode.PROBLEMS)
        return
    ws = Workspace.default(workspace)
    n = Node.open(resolve_home(Path(node) if node else None))
    try:
        summary = inference.infer(n, ws.registry.get(name, version), ws.jobs.get(job_id).load_model(), job_id, series)
    except PermissionError as exc:
        raise InputError(str(exc)) from None
    if json_out:
        print_json(summary)
        return
    console.print(f"{summary['items']} item(s) scored in {summary['series']} series, {summary['positive']} positive "
                  f"(threshold {summary['threshold']:g}); model {summary['model']}@{summary['job']}")
    console.print(f"results stay at the node: {summary['stored']['catalogue']}; {summary['stored']['dicom']}")
    shared = summary["summary"]
    if shared is None:
        console.print("summary for the platform: withheld (node policy share_inference_summary = false)")
    else:
        console.print(f"summary for the platform (k={shared['k']}, counts below k suppressed): "
                      f"items {shared['items']}, positive {shared['positive']}, "
                      f"histogram {shared['histogram']['counts']}")

"""``incisive infer``: score a node's data with a trained model; results stay at the node.

Local mode: ``--node DIR`` (default ``$INCISIVE_NODE`` or the current directory) with the local workspace.
Platform mode: ``--node-id ID --platform URL``; the platform asks that node's agent, which answers with the
summary only if its policy allows. ``--node ID`` in platform mode, where ID is not a directory, still works
(deprecated: say ``--node-id``). See :mod:`.mode`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from incisive.cli import fl_output
from incisive.cli.mode import choose, deprecated, from_command_line, require_local
from incisive.cli.options import JsonOpt, LocalOpt, PlatformOpt, TokenOpt, WorkspaceOpt
from incisive.common.errors import InputError
from incisive.common.exit_codes import ExitCode
from incisive.common.output import console, print_json
from incisive.common.settings import resolve_home
from incisive.federated.bundle import parse_ref


def infer(ctx: typer.Context, model: Annotated[str, typer.Option(help="NAME:VERSION@JOB")],
          node: Annotated[Path | None, typer.Option(
              "--node", help="Local mode: the node directory (default: $INCISIVE_NODE or the current directory)")]
          = None,
          node_id: Annotated[str | None, typer.Option("--node-id", help="Platform mode: the node's id")] = None,
          series: Annotated[list[str] | None, typer.Option(help="Series UID(s); default all")] = None,
          workspace: WorkspaceOpt = None, platform: PlatformOpt = None, token: TokenOpt = "", local: LocalOpt = False,
          project: Annotated[str | None, typer.Option(help="Platform mode: the project it is for")] = None,
          timeout: Annotated[float, typer.Option(help="Platform mode: wait this long for the node (s)")] = 600.0,
          json_out: JsonOpt = False) -> None:
    """Score a node's data with a trained model; results are written at the node, only a summary is printed.
    With --platform and --node-id: the platform asks that node's agent, which answers with the summary only if
    its policy allows."""
    name, version, job_id = parse_ref(model)
    if not job_id:
        raise InputError("inference needs a trained model: NAME:VERSION@JOB")
    if node is not None and node_id is None and platform and not local and not node.expanduser().is_dir():
        deprecated(f"--node {node} in platform mode: {node} is not a directory, so it is taken as a node id; "
                   "say --node-id")
        node_id, node = str(node), None
    if platform and not local and node_id is None and node is None and not from_command_line(ctx, "platform"):
        deprecated("$INCISIVE_PLATFORM_URL is set but no --node-id is given: running locally on "
                   "$INCISIVE_NODE or the current directory; add --local to say so (this inference will go)")
        local = True
    api = choose(ctx, platform, token, local, {"--node": node, "--workspace": workspace})
    if api is not None:
        if node_id is None:
            raise InputError("platform mode needs --node-id ID (or --local for a node directory here)")
        request = api.infer(model, node_id, series, project)
        if not json_out:
            console.print(f"inference {request['id']} queued for {node_id}")
        done = fl_output.wait_inference(api, str(request["id"]), node_id, timeout, json_out)
        fl_output.print_inference(done, json_out)
        if done["status"] != "completed":
            raise typer.Exit(ExitCode.PROBLEMS)
        return
    require_local(api, {"--node-id": node_id, "--project": project})
    from incisive.federated.service import Workspace
    from incisive.node.fl import inference
    from incisive.node.home import Node

    ws = Workspace.default(workspace)
    n = Node.open(resolve_home(node))
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

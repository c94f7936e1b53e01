"""``incisive query …``: a researcher's federated queries over HTTP (``--platform URL``, alias ``--url``; token from
``--token`` or $INCISIVE_TOKEN)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from incisive.cli.options import JsonOpt, TokenOpt
from incisive.cli.options import QueryPlatformOpt as UrlOpt
from incisive.common.api_client import ApiClient
from incisive.common.errors import InputError
from incisive.common.output import console, print_json, table

app = typer.Typer(help="Federated queries across nodes (as a researcher).", no_args_is_help=True)



def call(url: str, token: str, path: str, body: dict[str, Any], timeout_s: float = 120.0) -> Any:
    return ApiClient(url, token, timeout_s).call("POST", path, json=body)


def _list(text: str | None) -> list[str] | None:
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    return items or None


def _where(items: list[str]) -> dict[str, str] | None:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError("--where takes FIELD=VALUE")
        out[name.strip()] = value.strip()
    return out or None


@app.command()
def count(
    by: Annotated[str, typer.Option(help="Comma-separated: modality, body_part, cancer_type, sex, age_band, "
                                         "label, label.NAME")],
    nodes: Annotated[str | None, typer.Option(help="Comma-separated node ids (default: all)")] = None,
    where: Annotated[list[str], typer.Option(help="Filter FIELD=VALUE (repeatable)")] = [],  # noqa: B006
    unit: Annotated[str, typer.Option(help="patients, studies or series")] = "patients",
    epsilon: Annotated[float | None, typer.Option(help="Add Laplace noise with this ε (spends budget)")] = None,
    project: Annotated[str | None, typer.Option(help="Project the query belongs to (node policies may ask)")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    token: TokenOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Counts across nodes, through each node's disclosure control: only safe cells are listed; refusals say
    which rule refused and why."""
    body = {"by": _list(by) or [], "nodes": _list(nodes), "where": _where(where), "unit": unit,
            "epsilon": epsilon, "project": project}
    data = call(url, token, "/api/v1/queries/count", body)
    if json_out:
        print_json(data)
        return
    k = data["k"]
    rows = [(*c["key"], f"<{k}" if c["count"] is None else str(c["count"])) for c in data["cells"]]
    console.print(table(f"Count of {data['unit']} (k={k})", [*data["by"], "count"], rows))
    if data.get("total") is not None:
        console.print(f"total: {data['total']}")
    for line in disclosure_notes(data):
        console.print(line, highlight=False)


def disclosure_notes(data: dict[str, Any]) -> list[str]:
    """What the researcher is told beside the table: what was withheld or refused, by which rule, and why."""
    lines = ["nodes: " + ", ".join(f"{n} {s}" for n, s in data["nodes"].items())]
    for node, why in (data.get("refusals") or {}).items():
        lines.append(f"{node} {data['nodes'].get(node, 'refused')} ({why['rule']}): {why['message']}")
    withheld = ", ".join(data.get("withheld_by") or [])
    if data.get("dp"):
        dp = data["dp"]
        origin = " (the platform's default: this platform answers noisy counts only)" if dp.get("default") else ""
        lines.append(f"Laplace noise at each node, ε={dp['epsilon']}{origin}; the declared value domain is listed, "
                     f"'<{data['k']}' where the noisy count is below k; budget left for "
                     f"{dp.get('project') or 'queries without a project'}: {dp['budget_left']}")
    elif not data.get("complete", True):
        hidden = data.get("suppressed")
        amount = (f"{hidden} {data.get('unit', 'units')}" if hidden is not None
                  else f"fewer than {data['k']} {data.get('unit', 'units')} (so not shown)")
        lines.append(f"not listed: {amount} in no shown cell; withheld by: {withheld or 'none'} "
                     "(cells below k are not listed at all, nor cells that would differ by fewer than k from "
                     "an earlier answer)")
    return lines


@app.command()
def summary(
    metric: Annotated[str, typer.Argument(help="slice_thickness, pixel_spacing, rows, columns, "
                                               "instances_per_series, series_per_study, studies_per_patient")],
    nodes: Annotated[str | None, typer.Option(help="Comma-separated node ids (default: all)")] = None,
    project: Annotated[str | None, typer.Option(help="Project the query belongs to")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    token: TokenOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Pooled n, mean and SD of a numeric metric across nodes."""
    data = call(url, token, "/api/v1/queries/summary", {"metric": metric, "nodes": _list(nodes),
                                                        "project": project})
    if json_out:
        print_json(data)
        return
    console.print(table(f"{metric} (k={data['k']})", ["n", "mean", "sd"], [(data["n"], data["mean"], data["sd"])]))
    for line in disclosure_notes({**data, "complete": True}):
        console.print(line, highlight=False)

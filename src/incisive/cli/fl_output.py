"""Platform-mode output of ``incisive fl | model | infer`` (:mod:`.fl`, :mod:`.model`, :mod:`.infer`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.live import Live

from incisive.common.output import console, print_json, table
from incisive.federated.remote import Platform


def print_bundle(data: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(data)
    else:
        verb = "registered" if data.get("created", True) else "already registered"
        console.print(f"{verb} {data['ref']} sha256 {data['sha256']} (platform)")


def print_models(rows: list[dict[str, Any]], json_out: bool) -> None:
    if json_out:
        print_json(rows)
        return
    console.print(table("Models (platform)", ["model", "kind", "job types", "sha256", "registered"],
                        [(r["ref"], r["kind"], ",".join(r["job_types"] or []), r["sha256"][:16], r["registered_at"])
                         for r in rows]))


def status_line(job: dict[str, Any]) -> str:
    server = job.get("server") or {}
    pooled = server.get("pooled") or {}
    auc = f" pooled AUC {pooled['auc']:.4f}" if isinstance(pooled.get("auc"), float) else ""
    return (f"job {job['id']} · {job['model']} · {job['spec'].get('strategy', 'fedavg')} · {job['status']} · "
            f"phase {server.get('phase', '-')} round {server.get('round', 0)}{auc}")


def print_job(job: dict[str, Any]) -> None:
    console.print(status_line(job))
    nodes = [(n, s.get("status", ""), s.get("reason", "")) for n, s in sorted(job["nodes"].items())]
    console.print(table("Nodes", ["node", "status", "reason"], nodes))
    rows = []
    for r in job.get("rounds") or []:
        pooled = r.get("pooled") or {}
        rows.append((r["round"], r["phase"], ", ".join(str(n.get("node")) for n in r["nodes"]), len(r["failures"]),
                     f"{pooled['auc']:.4f}" if "auc" in pooled else "",
                     f"{pooled['accuracy']:.4f}" if "accuracy" in pooled else ""))
    console.print(table("Rounds", ["round", "phase", "nodes", "failures", "pooled AUC", "pooled acc"], rows))
    if job.get("error"):
        console.print(f"[red]error:[/] {job['error']}")


def follow(api: Platform, job_id: str, json_out: bool) -> dict[str, Any]:
    """Wait for the job to end: a live status line on a terminal, nothing with --json."""
    if json_out or not console.is_terminal:
        return api.follow(job_id, interval=2.0)
    with Live(console=console, refresh_per_second=2) as live:
        return api.follow(job_id, lambda j: live.update(status_line(j)), interval=1.0)


def show(job: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(job)
    else:
        print_job(job)


def plot(api: Platform, job_id: str, out: Path | None) -> tuple[Path, Path]:
    """Per-round metrics of a platform job as JSON + PNG, written locally in ``OUT/JOB`` (default ./fl-plots)."""
    from incisive.federated import curves
    from incisive.federated.jobs import Job

    job = api.job(job_id)
    path = (out or Path("fl-plots")) / job["id"]
    path.mkdir(parents=True, exist_ok=True)
    (path / "job.json").write_text(json.dumps({**job["spec"], "id": job["id"], "model": job["model"]}))
    (path / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in job.get("rounds") or []))
    return curves.plot(Job(path), path)


def wait_inference(api: Platform, request_id: str, node: str, timeout: float, json_out: bool) -> dict[str, Any]:
    """Wait for the node's answer: a spinner on a terminal, nothing with --json."""
    if json_out or not console.is_terminal:
        return api.wait_inference(request_id, timeout, interval=1.0)
    with console.status(f"inference {request_id}: waiting for {node}") as spinner:
        return api.wait_inference(request_id, timeout, interval=1.0,
                                  on_update=lambda r: spinner.update(f"inference {request_id}: {r['status']} at "
                                                                     f"{node}"))


def print_inference(request: dict[str, Any], json_out: bool) -> None:
    """The node's answer: the summary it shared, that it was withheld, a refusal, or still pending."""
    if json_out:
        print_json(request)
        return
    status, node = request["status"], request["node"]
    console.print(f"inference {request['id']} · {request['model']} · node {node} · {status}")
    if status == "completed":
        result = request.get("result") or {}
        summary = result.get("summary")
        console.print(f"results stay at {node} (catalogue table inference_result; DICOM SR per scored series)")
        if not result.get("shared") or not isinstance(summary, dict):
            console.print(f"summary: {summary or 'withheld by node policy'}")
            return
        def n(key: str) -> str:
            value = summary.get(key)
            return "suppressed" if value is None else str(value)
        console.print(f"summary (k={summary.get('k')}; counts below k suppressed): items {n('items')}, "
                      f"series {n('series')}, positive {n('positive')} at threshold {summary.get('threshold')}")
        hist = summary.get("histogram") or {}
        edges, counts = hist.get("edges") or [], hist.get("counts") or []
        console.print(table("Score histogram", ["score", "count"],
                            [(f"{edges[i]:.1f}–{edges[i + 1]:.1f}", "suppressed" if c is None else c)
                             for i, c in enumerate(counts) if i + 1 < len(edges)]))
    elif status in ("queued", "running"):
        console.print(f"no answer from {node} yet; the request stays open until {request.get('expires_at')}")
    else:
        console.print(f"[red]{status}:[/] {request.get('error') or ''}")

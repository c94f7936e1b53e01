"""Run federated jobs: create the job record, start (or reuse) the SuperLink and SuperNodes, submit, wait, record.

The workspace (``$INCISIVE_FL_HOME``, default ``~/.incisive/fl``) holds the model registry and the job records;
when the platform's job API lands, ``JobStore`` / ``Registry`` are the two seams to swap.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from incisive.common.errors import InputError
from incisive.federated.bundle import Registry, parse_ref
from incisive.federated.deploy import Federation, wait_job
from incisive.federated.jobs import Job, JobStore, now

STRATEGIES = ("fedavg", "fedprox")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def default(cls, root: Path | None = None) -> Workspace:
        return cls((root or Path(os.environ.get("INCISIVE_FL_HOME", "~/.incisive/fl"))).expanduser().resolve())

    @property
    def registry(self) -> Registry:
        return Registry(self.root / "registry")

    @property
    def jobs(self) -> JobStore:
        return JobStore(self.root / "jobs")


@dataclass
class JobOptions:
    rounds: int = 5
    strategy: str = "fedavg"
    proximal_mu: float = 0.1
    dp_epsilon: float = 0.0
    dp_delta: float = 1e-5
    secagg: bool = False
    round_timeout: float = 60.0
    min_nodes: int | None = None
    local_epochs: int = 0
    seed: int = 0


def _run(ws: Workspace, model_ref: str, nodes: dict[str, Path], opts: JobOptions, op: str,
         federation: Federation | None, timeout: float, progress: Callable[[dict[str, Any]], None] | None) -> Job:
    name, version, source_job = parse_ref(model_ref)
    if opts.strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}")
    if not nodes:
        raise InputError("no nodes given")
    bundle = ws.registry.get(name, version)
    init = ""
    if op != "train" or source_job:
        if not source_job:
            raise InputError("evaluation needs a trained model: NAME:VERSION@JOB")
        init = str(ws.jobs.get(source_job).path)
    min_nodes = opts.min_nodes or max(1, len(nodes))
    job = ws.jobs.create({"op": op, "model": bundle.manifest.ref, "sha256": bundle.digest, "source_job": source_job,
                          "nodes": sorted(nodes), "rounds": opts.rounds if op == "train" else 0,
                          "strategy": opts.strategy, "proximal_mu": opts.proximal_mu if opts.strategy == "fedprox"
                          else None, "privacy": {"dp_epsilon": opts.dp_epsilon or None, "dp_delta": opts.dp_delta,
                                                 "secagg": opts.secagg},
                          "round_timeout": opts.round_timeout, "min_nodes": min_nodes})
    run_config: dict[str, Any] = {
        "job-dir": str(job.path), "job-id": job.id, "registry": str(ws.registry.root), "model": name,
        "version": version, "sha256": bundle.digest, "op": op, "num-rounds": opts.rounds, "strategy": opts.strategy,
        "proximal-mu": opts.proximal_mu, "round-timeout": opts.round_timeout, "min-nodes": min_nodes,
        "local-epochs": opts.local_epochs, "dp-epsilon": opts.dp_epsilon, "dp-delta": opts.dp_delta,
        "secagg": opts.secagg, "init-model": init, "seed": opts.seed}
    own = federation is None
    fed = federation or Federation(ws.root / "runtime" / job.id)
    try:
        if own:
            fed.start_superlink()
            for node_name, path in nodes.items():
                fed.start_supernode(node_name, path)
        job.update(status="running", started_at=now())
        run_id = fed.submit(job, run_config)
        job.update(flower_run_id=run_id)
        state = wait_job(job, timeout, progress)
    except Exception as exc:
        job.update(status="failed", finished_at=now(), error=str(exc)[:500])
        raise
    finally:
        if own:
            fed.stop()
    status = "completed" if state.get("phase") == "completed" else "failed"
    job.update(status=status, finished_at=now(), error=state.get("error"), provenance=provenance(job))
    if status == "completed" and op == "train" and job.model_path.exists():
        ws.registry.add_trained(name, version, job.id, job.model_path, job.spec)
    return job


def provenance(job: Job) -> dict[str, Any]:
    """Per-node data summary (sample counts only), participation per round, final pooled metrics."""
    per_node: dict[str, dict[str, Any]] = {}
    refused: dict[str, str] = {}
    last_eval: dict[str, Any] = {}
    for r in job.rounds():
        for n in r.get("nodes", []):
            entry = per_node.setdefault(str(n.get("node")), {"fit_rounds": 0, "train_examples": 0})
            if r["phase"] == "fit":
                entry["fit_rounds"] += 1
                entry["train_examples"] = int(n.get("num_examples", 0))
                if "dp_epsilon" in n:
                    entry["dp_epsilon_spent"] = n["dp_epsilon"]
            else:
                entry["test_examples"] = int(n.get("n", 0))
        for f in r.get("failures", []):
            if "not approved" in f.get("reason", ""):
                refused[f["node"]] = f["reason"]
        if r["phase"] == "evaluate":
            last_eval = r.get("pooled", {})
    return {"nodes": per_node, "refused": refused, "final": last_eval, "software": "incisive + flwr 1.42.0"}


def train(ws: Workspace, model_ref: str, nodes: dict[str, Path], opts: JobOptions,
          federation: Federation | None = None, timeout: float = 3600,
          progress: Callable[[dict[str, Any]], None] | None = None) -> Job:
    return _run(ws, model_ref, nodes, opts, "train", federation, timeout, progress)


def evaluate(ws: Workspace, model_ref: str, nodes: dict[str, Path], opts: JobOptions | None = None,
             federation: Federation | None = None, timeout: float = 600) -> Job:
    return _run(ws, model_ref, nodes, opts or JobOptions(), "evaluate", federation, timeout, None)

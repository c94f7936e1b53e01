"""Central vs federated training of the tabular-risk model on scikit-learn's breast-cancer data.

Two parts, both over 3 and 10 nodes, IID and non-IID (Dirichlet 0.5) splits:

* ``deployment``: real Flower processes (one ``flower-superlink``, one SuperNode per node, each with its warm
  ClientApp executor, ``flwr run``), the same path as ``incisive fl train``. Per setting one warm-up job, then
  ``--jobs`` measured jobs of ``--rounds`` rounds. Per round: wall time between the ends of consecutive rounds
  (fit + evaluate) against pure local training: (a) the slowest node's ``engine.train`` time in that round and
  (b) the same epochs on the pooled training rows in one process (the central peer). Accuracy: the final
  federated model vs the central model on the same held-out rows (the bundle's hash-based test split).
* ``simulation``: FedAvg in one process with the same engine, no Flower (the algorithm without transport).

Writes benchmarks/results/fl.json with the machine load before/after each setting (shared 2-core machines).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from incisive.federated import approval, engine, partition
from incisive.federated.bundle import bundle_digest, load_task, shipped_bundle
from incisive.federated.deploy import Federation
from incisive.federated.service import JobOptions, Workspace, train
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical

SETTINGS = [(3, "iid"), (3, "non-iid"), (10, "iid"), (10, "non-iid")]


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _task() -> tuple[dict[str, Any], Any]:
    path = shipped_bundle("tabular-risk")
    return json.loads((path / "manifest.json").read_text()), load_task(path, bundle_digest(path))


def _nodes(root: Path, parts: int, scheme: str) -> dict[str, Node]:
    x, y, names = partition.breast_cancer()
    out = {}
    for i, idx in enumerate(partition.partition(y, parts, scheme, seed=1)):
        node = Node.init(root / f"node-{i}", provider=f"Hospital {i:02d}")
        import_clinical(node, partition.write_csv(root / f"part-{i}.csv", x, y, names, idx, f"P{i}-"))
        out[f"hospital-{i:02d}"] = node
    return out


def _pooled(nodes: dict[str, Node], split: str) -> tuple[np.ndarray, np.ndarray]:
    manifest, task = _task()
    parts = [task.load_data(n, manifest, split) for n in nodes.values()]
    return np.concatenate([d.x for d in parts]), np.concatenate([d.y for d in parts])


def _central(nodes: dict[str, Node], rounds: int, epochs: int, seed: int) -> tuple[float, float]:
    """Accuracy of the model trained on the pooled rows, and its wall time per round of ``epochs`` epochs."""
    manifest, task = _task()
    (x_tr, y_tr), (x_te, y_te) = _pooled(nodes, "train"), _pooled(nodes, "test")
    p = manifest["params"]
    torch.manual_seed(seed)
    model = task.build_model(manifest)
    took = []
    for r in range(rounds):
        t = time.perf_counter()
        engine.train(model, x_tr, y_tr, epochs=epochs, lr=float(p["lr"]), batch_size=int(p["batch_size"]), seed=r)
        took.append(time.perf_counter() - t)
    return float(engine.evaluate(model, x_te, y_te)["accuracy"]), statistics.median(took)


def _accuracy(nodes: dict[str, Node], weights: list[np.ndarray]) -> float:
    manifest, task = _task()
    x_te, y_te = _pooled(nodes, "test")
    model = task.build_model(manifest)
    engine.set_weights(model, weights)
    return float(engine.evaluate(model, x_te, y_te)["accuracy"])


def deployment(parts: int, scheme: str, rounds: int, jobs: int, root: Path) -> dict[str, Any]:
    manifest, _ = _task()
    epochs = int(manifest["params"]["epochs"])
    nodes = _nodes(root / "nodes", parts, scheme)
    ws = Workspace(root / "ws")
    bundle = ws.registry.register(shipped_bundle("tabular-risk"), "tabular-risk", "1")
    for n in nodes.values():
        approval.approve(n.home, bundle)
    load_before = _load()
    round_s: list[float] = []
    local_s: list[float] = []
    fed_acc: list[float] = []
    central_acc: list[float] = []
    central_s: list[float] = []
    setup_s: list[float] = []
    with Federation(root / "fed") as fed:
        fed.start_superlink()
        for name, n in nodes.items():
            fed.start_supernode(name, n.home)
        for rep in range(jobs + 1):
            t = time.perf_counter()
            job = train(ws, "tabular-risk:1", {k: n.home for k, n in nodes.items()},
                        JobOptions(rounds=rounds, round_timeout=120, seed=rep), federation=fed, timeout=1800)
            total = time.perf_counter() - t
            if job.spec["status"] != "completed":
                raise SystemExit(f"job failed: {job.spec.get('error')}")
            recs = job.rounds()
            ends = [r["t"] for r in recs if r["phase"] == "evaluate"]
            fits = [r for r in recs if r["phase"] == "fit"]
            if rep == 0:
                continue  # warm-up: SuperNodes connect, executors import torch, caches fill
            per_round = [b - a for a, b in itertools.pairwise(ends)]  # round 2..R: steady state
            round_s += per_round
            local_s += [max(float(x["train_seconds"]) for x in f["nodes"]) for f in fits[1:]]
            setup_s.append(total - sum(per_round))
            fed_acc.append(_accuracy(nodes, job.load_model()))
            acc, c_round = _central(nodes, rounds, epochs, rep)
            central_acc.append(acc)
            central_s.append(c_round)
    for n in nodes.values():
        n.catalogue.dispose()
    med_round, med_local, med_central = (statistics.median(v) for v in (round_s, local_s, central_s))
    return {"nodes": parts, "split": scheme, "rounds": rounds, "jobs": jobs, "local_epochs": epochs,
            "federated_accuracy": fed_acc, "central_accuracy": central_acc,
            "accuracy_ratio": statistics.median(fed_acc) / statistics.median(central_acc),
            "round_s": round_s, "slowest_node_train_s": local_s, "central_round_s": central_s,
            "round_time_ratio_vs_node_training": med_round / med_local,
            "round_time_ratio_vs_central_training": med_round / med_central,
            "overhead_s_per_round": med_round - med_local,
            "job_setup_s": setup_s, "load_before": load_before, "load_after": _load()}


def simulation(parts: int, scheme: str, rounds: int, repeats: int) -> dict[str, Any]:
    manifest, task = _task()
    p = manifest["params"]
    lr, batch, epochs = float(p["lr"]), int(p["batch_size"]), int(p["epochs"])
    x_raw, y, _ = partition.breast_cancer()
    x = task.transform(manifest, x_raw)
    test = np.random.default_rng(0).random(len(y)) < 0.25
    train_idx = np.flatnonzero(~test)
    split = [train_idx[q] for q in partition.partition(y[train_idx], parts, scheme, seed=1)]
    c_acc, f_acc, c_round, f_round = [], [], [], []
    for rep in range(repeats + 1):
        torch.manual_seed(rep)
        central = task.build_model(manifest)
        t = time.perf_counter()
        engine.train(central, x[train_idx], y[train_idx], epochs=rounds * epochs, lr=lr, batch_size=batch)
        c_time = (time.perf_counter() - t) / rounds
        torch.manual_seed(rep)
        glob = engine.get_weights(task.build_model(manifest))
        t = time.perf_counter()
        for _ in range(rounds):
            updates, sizes = [], []
            for idx in split:
                m = task.build_model(manifest)
                engine.set_weights(m, glob)
                engine.train(m, x[idx], y[idx], epochs=epochs, lr=lr, batch_size=batch)
                updates.append(engine.get_weights(m))
                sizes.append(len(idx))
            glob = [sum(u[i] * s for u, s in zip(updates, sizes, strict=True)) / sum(sizes)
                    for i in range(len(glob))]
        f_time = (time.perf_counter() - t) / rounds
        fed = task.build_model(manifest)
        engine.set_weights(fed, glob)
        if rep == 0:
            continue  # warm-up
        c_acc.append(engine.evaluate(central, x[test], y[test].astype(np.float32))["accuracy"])
        f_acc.append(engine.evaluate(fed, x[test], y[test].astype(np.float32))["accuracy"])
        c_round.append(c_time)
        f_round.append(f_time)
    return {"nodes": parts, "split": scheme, "central_accuracy": c_acc, "federated_accuracy": f_acc,
            "accuracy_ratio": statistics.median(f_acc) / statistics.median(c_acc),
            "central_round_s": c_round, "federated_round_s": f_round,
            "round_time_ratio": statistics.median(f_round) / statistics.median(c_round)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 nodes IID only, 1 measured job of 3 rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--settings", default="", help="e.g. 3:iid,10:non-iid (default: all four)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fl.json")
    args = ap.parse_args()
    settings = SETTINGS[:1] if args.quick else SETTINGS
    if args.settings:
        settings = [(int(s.split(":")[0]), s.split(":")[1]) for s in args.settings.split(",")]
    rounds, jobs = (3, 1) if args.quick else (args.rounds, args.jobs)
    started, load = time.time(), _load()
    deploy, sim = [], []
    for parts, scheme in settings:
        with tempfile.TemporaryDirectory(prefix="fl-bench-") as tmp:
            deploy.append(deployment(parts, scheme, rounds, jobs, Path(tmp)))
        print(json.dumps({k: v for k, v in deploy[-1].items() if "ratio" in k or "overhead" in k
                          or k in ("nodes", "split", "load_after")}), flush=True)
        sim.append(simulation(parts, scheme, 10, 1 if args.quick else 3))
    out = {"benchmark": "fl", "input": "scikit-learn breast-cancer (569 rows, 30 features) split across nodes; "
           "test rows = the bundle's hash split (deployment) or a fixed 25% (simulation)",
           "peer": "centralized training of the same model on the pooled rows (same epochs per round)",
           "quick": args.quick, "torch": torch.__version__, "cpus": os.cpu_count(), "load_at_start": load,
           "load_at_end": _load(), "wall_s": round(time.time() - started, 1),
           "targets": {"accuracy_ratio": ">= 0.99", "round_time_ratio": "<= 1.15"},
           "deployment": deploy, "simulation": sim}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

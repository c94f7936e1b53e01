"""Central vs federated training: the tabular-risk model on scikit-learn's breast-cancer data, and the lesion-cnn
imaging model on a synthetic DICOM cohort.

tabular-risk (``--model tabular-risk``), two parts, both over 3 and 10 nodes, IID and non-IID (Dirichlet 0.5) splits:

* ``deployment``: real Flower processes (one ``flower-superlink``, one SuperNode per node, each with its warm
  ClientApp executor, ``flwr run``), the same path as ``incisive fl train``. Per setting one warm-up job, then
  ``--jobs`` measured jobs of ``--rounds`` rounds. Per round: wall time between the ends of consecutive rounds
  (fit + evaluate) against pure local training: (a) the slowest node's ``engine.train`` time in that round and
  (b) the same epochs on the pooled training rows in one process (the central peer). Accuracy: the final
  federated model vs the central model on the same held-out rows (the bundle's hash-based test split).
* ``simulation``: FedAvg in one process with the same engine, no Flower (the algorithm without transport).

lesion-cnn (``--model lesion-cnn``), section ``deployment_imaging``: one synthetic cohort
(``incisive.demo.synth.generate_cohort``) split by patient across 3 real node directories, each importing its own
DICOM and clinical rows; the same Flower path as above; one warm-up job, then ``--image-jobs`` jobs of
``--image-rounds`` rounds with the bundle's default local epochs (round 1 also reads the pixels, so rounds 2.. are
measured). Node processes get ``--node-threads`` torch threads (default 1: 3 nodes on 2 cores with 2 threads each
oversubscribe them and slow the same training ~11x, which would flatter the ratio). Per measured
round, the round's wall time against (a) the slowest node's ``engine.train`` time in that round (inside the job,
3 nodes sharing the machine's cores); and, measured apart with the same epochs on each node's training slices:
(b) the 3 nodes' trainings run at the same time in 3 processes without Flower (same CPU sharing, no transport),
(c) each node alone (a hospital with its own machine), (d) the pooled slices in one process (the central peer).
Accuracy and AUC: the final federated model vs the central model trained on the pooled slices for the same
number of epochs (rounds × local epochs), both on the pooled test slices (the bundle's hash split per patient).

Writes benchmarks/results/fl.json with the machine load before/after each setting (shared 2-core machines); a run of
one model keeps the other model's figures already in the file. On a 2-core machine: tabular-risk ~10.5 min,
lesion-cnn ~4 min (``--model all``, the default, runs both).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.federated import engine, partition
from incisive.federated.bundle import bundle_digest, load_task, shipped_bundle
from incisive.federated.deploy import Federation, FlowerTls
from incisive.federated.jobs import Job
from incisive.federated.service import JobOptions, Workspace, train
from incisive.node.fl import approval
from incisive.node.fl.data import NodeData
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom

SETTINGS = [(3, "iid"), (3, "non-iid"), (10, "iid"), (10, "non-iid")]


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _task(name: str = "tabular-risk") -> tuple[dict[str, Any], Any]:
    path = shipped_bundle(name)
    return json.loads((path / "manifest.json").read_text()), load_task(path, bundle_digest(path))


def _nodes(root: Path, parts: int, scheme: str) -> dict[str, Node]:
    x, y, names = partition.breast_cancer()
    out = {}
    for i, idx in enumerate(partition.partition(y, parts, scheme, seed=1)):
        node = Node.init(root / f"node-{i}", provider=f"Hospital {i:02d}")
        import_clinical(node, partition.write_csv(root / f"part-{i}.csv", x, y, names, idx, f"P{i}-"))
        out[f"hospital-{i:02d}"] = node
    return out


def _pooled(nodes: dict[str, Node], split: str, model: str = "tabular-risk") -> tuple[np.ndarray, np.ndarray]:
    manifest, task = _task(model)
    parts = [task.load_data(NodeData(n), manifest, split) for n in nodes.values()]
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


def _workspace(root: Path, model: str, nodes: dict[str, Node]) -> Workspace:
    """A workspace with the shipped bundle registered as ``MODEL:1``, approved at every node."""
    ws = Workspace(root / "ws")
    bundle = ws.registry.register(shipped_bundle(model), model, "1")
    for n in nodes.values():
        approval.approve(n.home, bundle)
    return ws


def _jobs(root: Path, ws: Workspace, model: str, nodes: dict[str, Node], jobs: int,
          options: Callable[[int], JobOptions], tls: bool = False) -> Iterator[tuple[int, Job, float]]:
    """One SuperLink and a SuperNode per node; the warm-up job (rep 0), then ``jobs`` measured ones, each
    yielded as (rep, job, seconds from submission to completion). ``tls``: the SuperLink serves TLS with
    SuperNode authentication (a CA made here, a registered key per node), as the platform runs it."""
    link = FlowerTls.issue(root / "ca", root / "tls-link") if tls else None
    with Federation(root / ("fed-tls" if tls else "fed"), tls=link) as fed:
        fed.start_superlink()
        for name, n in nodes.items():
            fed.start_supernode(name, n.home)
        for rep in range(jobs + 1):
            t = time.perf_counter()
            job = train(ws, f"{model}:1", {k: n.home for k, n in nodes.items()}, options(rep), federation=fed,
                        timeout=1800)
            total = time.perf_counter() - t
            if job.spec["status"] != "completed":
                raise SystemExit(f"job failed: {job.spec.get('error')}")
            yield rep, job, total


def deployment(parts: int, scheme: str, rounds: int, jobs: int, root: Path) -> dict[str, Any]:
    manifest, _ = _task()
    epochs = int(manifest["params"]["epochs"])
    nodes = _nodes(root / "nodes", parts, scheme)
    ws = _workspace(root, "tabular-risk", nodes)
    load_before = _load()
    round_s: list[float] = []
    local_s: list[float] = []
    fed_acc: list[float] = []
    central_acc: list[float] = []
    central_s: list[float] = []
    setup_s: list[float] = []
    for rep, job, total in _jobs(root, ws, "tabular-risk", nodes, jobs,
                                 lambda rep: JobOptions(rounds=rounds, round_timeout=120, seed=rep)):
        if rep == 0:
            continue  # warm-up: SuperNodes connect, executors import torch, caches fill
        recs = job.rounds()
        ends = [r["t"] for r in recs if r["phase"] == "evaluate"]
        fits = [r for r in recs if r["phase"] == "fit"]
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
            glob = [np.asarray(sum(u[i] * s for u, s in zip(updates, sizes, strict=True)) / sum(sizes))
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


# ---------------------------------------------------------------- lesion-cnn on a synthetic DICOM cohort
IMAGE_MODEL = "lesion-cnn"


def _image_nodes(root: Path, parts: int, spec: CohortSpec) -> tuple[dict[str, Node], dict[str, Any]]:
    """One synthetic cohort split by patient (round-robin over the sorted patient folders) into ``parts`` node
    directories; each node imports only its own patients' DICOM files and clinical rows."""
    cohort = root / "cohort"
    t = time.perf_counter()
    summary = generate_cohort(cohort, spec)
    gen_s = time.perf_counter() - t
    owner: dict[str, int] = {}
    for i, folder in enumerate(sorted(f for f in (cohort / "dicom").iterdir() if f.is_dir())):
        dest = root / f"part-{i % parts}" / "dicom"
        dest.mkdir(parents=True, exist_ok=True)
        owner[folder.name.rsplit("_", 1)[1]] = i % parts  # folder = FAMILY_GIVEN_MRN
        shutil.move(folder, dest / folder.name)
    with (cohort / "clinical.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, rows = list(reader.fieldnames or []), list(reader)
    t = time.perf_counter()
    out: dict[str, Node] = {}
    for i in range(parts):
        part_csv = root / f"part-{i}" / "clinical.csv"
        with part_csv.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(r for j, r in enumerate(rows) if owner.get(r["patient_id"], j % parts) == i)
        node = Node.init(root / f"node-{i}", provider=f"Hospital {i:02d}")
        import_dicom(node, root / f"part-{i}" / "dicom", workers=1)
        import_clinical(node, part_csv, drop=["patient_name"])
        out[f"hospital-{i:02d}"] = node
    return out, {**{k: summary[k] for k in ("patients", "instances", "clinical_rows")},
                 "generate_s": round(gen_s, 1), "import_s": round(time.perf_counter() - t, 1)}


def _local_worker(path: str, epochs: int, lr: float, batch: int, reps: int, barrier: Any, out: Any) -> None:
    """One node's local training without Flower, started together with the other nodes' (spawned process)."""
    manifest, task = _task(IMAGE_MODEL)
    with np.load(path) as z:
        x, y = z["x"], z["y"]
    model = task.build_model(manifest)
    engine.train(model, x[: 4 * batch], y[: 4 * batch], epochs=1, lr=lr, batch_size=batch)  # first call is slow
    for rep in range(reps):
        barrier.wait()
        t = time.perf_counter()
        engine.train(model, x, y, epochs=epochs, lr=lr, batch_size=batch, seed=rep + 1)
        out.put((rep, path, time.perf_counter() - t))


def _concurrent_local(files: list[Path], epochs: int, lr: float, batch: int, reps: int) -> list[float]:
    """Per repeat, the slowest of the nodes' local trainings run at the same time in separate processes."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(len(files)), ctx.Queue()
    procs = [ctx.Process(target=_local_worker, args=(str(f), epochs, lr, batch, reps, barrier, queue))
             for f in files]
    for proc in procs:
        proc.start()
    got = [queue.get(timeout=900) for _ in range(len(files) * reps)]
    for proc in procs:
        proc.join(60)
    return [max(s for r, _, s in got if r == rep) for rep in range(reps)]


def deployment_imaging(parts: int, spec: CohortSpec, rounds: int, jobs: int, reps: int, root: Path,
                       node_threads: int) -> dict[str, Any]:
    """``node_threads``: torch threads of each node process (``OMP_NUM_THREADS`` for the SuperNodes' executors and
    the concurrent peer's processes; 0 = torch's default, one per core). Three nodes sharing two cores with two
    threads each oversubscribe them: measured, the same local training then takes ~11x longer."""
    started = time.time()
    saved_env = os.environ.get("OMP_NUM_THREADS")
    if node_threads:
        os.environ["OMP_NUM_THREADS"] = str(node_threads)  # inherited by the node processes started below
    try:
        return _deployment_imaging(parts, spec, rounds, jobs, reps, root, node_threads, started)
    finally:
        if saved_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved_env


def _deployment_imaging(parts: int, spec: CohortSpec, rounds: int, jobs: int, reps: int, root: Path,
                        node_threads: int, started: float) -> dict[str, Any]:
    manifest, task = _task(IMAGE_MODEL)
    p = manifest["params"]
    epochs, lr, batch = int(p["epochs"]), float(p["lr"]), int(p["batch_size"])
    nodes, cohort = _image_nodes(root / "nodes", parts, spec)
    node_data = {name: (task.load_data(NodeData(n), manifest, "train"), task.load_data(NodeData(n), manifest, "test"))
                 for name, n in nodes.items()}
    ws = _workspace(root, IMAGE_MODEL, nodes)
    load_before = _load()
    per_round: list[dict[str, Any]] = []
    fed_metrics: list[dict[str, float]] = []
    setup_s: list[float] = []
    warmup_s = 0.0
    for rep, job, total in _jobs(root, ws, IMAGE_MODEL, nodes, jobs, lambda rep: JobOptions(
            rounds=1 if rep == 0 else rounds, round_timeout=300, seed=rep)):
        if rep == 0:
            warmup_s = total  # SuperNodes connect, executors import torch/MONAI, first training call
            continue
        recs = job.rounds()
        fits = [r for r in recs if r["phase"] == "fit"]
        evals = [r for r in recs if r["phase"] == "evaluate"]
        for prev, fit, ev in zip(evals, fits[1:], evals[1:], strict=False):  # round 2..R (1 reads pixels)
            node_s = sorted(float(x["train_seconds"]) for x in fit["nodes"])
            per_round.append({"job": rep, "round": fit["round"], "federated_s": ev["t"] - prev["t"],
                              "fit_phase_s": fit["t"] - prev["t"], "evaluate_phase_s": ev["t"] - fit["t"],
                              "node_train_s_in_job": node_s, "slowest_node_train_s_in_job": node_s[-1]})
        setup_s.append(total - sum(r["federated_s"] for r in per_round if r["job"] == rep))
        model = task.build_model(manifest)
        engine.set_weights(model, job.load_model())
        x_te = np.concatenate([te.x for _, te in node_data.values()])
        y_te = np.concatenate([te.y for _, te in node_data.values()])
        m = engine.evaluate(model, x_te, y_te)
        fed_metrics.append({"accuracy": float(m["accuracy"]), "auc": float(m["auc"])})
    load_after_fl = _load()
    for n in nodes.values():
        n.catalogue.dispose()
    # peers without Flower, same epochs per round on the same slices
    files = []
    for name, (tr, _) in node_data.items():
        files.append(root / f"{name}-train.npz")
        np.savez(files[-1], x=tr.x, y=tr.y)
    concurrent = _concurrent_local(files, epochs, lr, batch, reps)
    warm = task.build_model(manifest)
    engine.train(warm, node_data[next(iter(node_data))][0].x[: 4 * batch],
                 node_data[next(iter(node_data))][0].y[: 4 * batch], epochs=1, lr=lr, batch_size=batch)
    alone = []
    for rep in range(reps):
        took = []
        for tr, _ in node_data.values():
            model = task.build_model(manifest)
            t = time.perf_counter()
            engine.train(model, tr.x, tr.y, epochs=epochs, lr=lr, batch_size=batch, seed=rep + 1)
            took.append(time.perf_counter() - t)
        alone.append(max(took))
    x_tr = np.concatenate([tr.x for tr, _ in node_data.values()])
    y_tr = np.concatenate([tr.y for tr, _ in node_data.values()])
    x_te = np.concatenate([te.x for _, te in node_data.values()])
    y_te = np.concatenate([te.y for _, te in node_data.values()])
    central_metrics, central_s = [], []
    for rep in range(1, jobs + 1):
        torch.manual_seed(rep)
        model = task.build_model(manifest)
        for r in range(rounds):
            t = time.perf_counter()
            engine.train(model, x_tr, y_tr, epochs=epochs, lr=lr, batch_size=batch, seed=r)
            central_s.append(time.perf_counter() - t)
        m = engine.evaluate(model, x_te, y_te)
        central_metrics.append({"accuracy": float(m["accuracy"]), "auc": float(m["auc"])})
    fed_s = [float(rec["federated_s"]) for rec in per_round]
    in_job = [float(rec["slowest_node_train_s_in_job"]) for rec in per_round]
    for rec in per_round:
        rec["ratio_vs_slowest_node_training"] = rec["federated_s"] / rec["slowest_node_train_s_in_job"]
    med = statistics.median

    def ratio(key: str) -> float:
        return med(x[key] for x in fed_metrics) / med(x[key] for x in central_metrics)

    return {
        "model": IMAGE_MODEL, "nodes": parts,
        "input": f"synthetic cohort (incisive.demo.synth, {spec}) split by patient round-robin across {parts} node "
                 "directories, each with its own imported DICOM + clinical rows; CT/MR series, central slices, "
                 "resized to 32x32; test slices = the bundle's hash split per patient",
        "cohort": cohort,
        "node_slices": {name: {"train": len(tr), "test": len(te)} for name, (tr, te) in node_data.items()},
        "rounds": rounds, "measured_rounds_per_job": rounds - 1, "jobs": jobs, "local_epochs": epochs,
        "batch_size": batch, "repeats_without_flower": reps,
        "node_torch_threads": node_threads or "default", "benchmark_process_torch_threads": torch.get_num_threads(),
        "per_round": per_round,
        "federated_round_s": fed_s, "slowest_node_train_s_in_job": in_job,
        "concurrent_local_training_s": concurrent, "slowest_node_alone_training_s": alone,
        "central_round_s": central_s,
        "round_time_ratio_vs_node_training": med(fed_s) / med(in_job),
        "round_time_ratio_vs_concurrent_local_training": med(fed_s) / med(concurrent),
        "round_time_ratio_vs_node_alone_training": med(fed_s) / med(alone),
        "round_time_ratio_vs_central_training": med(fed_s) / med(central_s),
        "overhead_s_per_round": med(fed_s) - med(in_job),
        "federated": fed_metrics, "central": central_metrics,
        "accuracy_ratio": ratio("accuracy"), "auc_ratio": ratio("auc"),
        "warmup_job_s": warmup_s, "job_setup_s": setup_s,
        "load_before": load_before, "load_after_federated": load_after_fl, "load_after": _load(),
        "wall_s": round(time.time() - started, 1),
        "ratios_note": "vs_node_training: the slowest node's engine.train time inside the same round (3 nodes "
                       "share the cores, node_torch_threads each); vs_concurrent_local: the 3 nodes' trainings at "
                       "once in 3 processes without Flower; vs_node_alone: each node alone on the machine "
                       "(includes the CPU sharing of the federated round); vs_central: the pooled slices, one process",
    }


def tls_overhead(parts: int, rounds: int, jobs: int, blocks: int, root: Path) -> dict[str, Any]:
    """Round time with TLS + SuperNode authentication vs plaintext in the same run: alternating blocks (plain,
    TLS, plain, TLS, ...) of one warm-up and ``jobs`` measured jobs on a fresh SuperLink each, so that the
    shared machine's load drifts over both alike."""
    nodes = _nodes(root / "nodes", parts, "iid")
    ws = _workspace(root, "tabular-risk", nodes)
    times: dict[str, list[float]] = {"plain": [], "tls": []}
    for block in range(2 * blocks):
        mode = "tls" if block % 2 else "plain"
        for rep, job, _total in _jobs(root / f"block-{block}", ws, "tabular-risk", nodes, jobs,
                                      lambda rep: JobOptions(rounds=rounds, round_timeout=120, seed=rep),
                                      tls=mode == "tls"):
            if rep:
                ends = [r["t"] for r in job.rounds() if r["phase"] == "evaluate"]
                times[mode] += [b - a for a, b in itertools.pairwise(ends)]
    for n in nodes.values():
        n.catalogue.dispose()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"nodes": parts, "rounds": rounds, "jobs_per_block": jobs, "blocks_each": blocks, "round_s": times,
            "median_round_s": med, "tls_vs_plain_ratio": med["tls"] / med["plain"], "load_after": _load()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("all", "tabular-risk", IMAGE_MODEL), default="all",
                    help="which part to run; the other model's figures already in --out are kept")
    ap.add_argument("--quick", action="store_true", help="3 nodes IID only, 1 measured job of 3 rounds; "
                    "lesion-cnn: a small cohort")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--settings", default="", help="e.g. 3:iid,10:non-iid (default: all four)")
    ap.add_argument("--image-patients", type=int, default=1200)
    ap.add_argument("--image-slices", type=int, default=16, help="slices per CT/MR series of the cohort")
    ap.add_argument("--image-rounds", type=int, default=4, help="rounds of each measured lesion-cnn job")
    ap.add_argument("--image-jobs", type=int, default=3, help="measured lesion-cnn jobs (the method asks for >= 3)")
    ap.add_argument("--node-threads", type=int, default=1,
                    help="lesion-cnn: torch threads per node process (0: torch's default, one per core)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fl.json")
    ap.add_argument("--tls-overhead", action="store_true", help="only: tabular-risk round time with TLS + "
                    "SuperNode auth vs plaintext, 3 nodes, same run (section tls_overhead)")
    ap.add_argument("--tls-blocks", type=int, default=2, help="--tls-overhead: blocks of each mode (alternating)")
    args = ap.parse_args()
    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.tls_overhead:
        with tempfile.TemporaryDirectory(prefix="fl-bench-tls-") as tmp:
            out["tls_overhead"] = tls_overhead(3, args.rounds, 1 if args.quick else 2,
                                               1 if args.quick else args.tls_blocks, Path(tmp))
        print(json.dumps({k: v for k, v in out["tls_overhead"].items() if k != "round_s"}), flush=True)
        args.model = "none"
    if args.model in ("all", "tabular-risk"):
        out.update(tabular(args))
    if args.model in ("all", IMAGE_MODEL):
        spec = CohortSpec(patients=args.image_patients, seed=5, size=32, ct_slices=args.image_slices,
                          mr_slices=args.image_slices)
        rounds, jobs, reps = args.image_rounds, args.image_jobs, 3
        if args.quick:
            spec, rounds, jobs, reps = CohortSpec(patients=24, seed=5, size=32, ct_slices=8, mr_slices=8), 3, 1, 1
        with tempfile.TemporaryDirectory(prefix="fl-bench-img-") as tmp:
            img = deployment_imaging(3, spec, rounds, jobs, reps, Path(tmp), args.node_threads)
        img["quick"] = args.quick
        print(json.dumps({k: v for k, v in img.items() if "ratio" in k or "overhead" in k
                          or k in ("node_slices", "federated_round_s", "slowest_node_train_s_in_job",
                                   "concurrent_local_training_s", "slowest_node_alone_training_s",
                                   "central_round_s", "federated", "central", "wall_s", "load_after")}),
              flush=True)
        out["deployment_imaging"] = img
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


def tabular(args: argparse.Namespace) -> dict[str, Any]:
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
    return {"benchmark": "fl", "input": "scikit-learn breast-cancer (569 rows, 30 features) split across nodes; "
            "test rows = the bundle's hash split (deployment) or a fixed 25% (simulation)",
            "peer": "centralized training of the same model on the pooled rows (same epochs per round)",
            "quick": args.quick, "torch": torch.__version__, "cpus": os.cpu_count(), "load_at_start": load,
            "load_at_end": _load(), "wall_s": round(time.time() - started, 1),
            "targets": {"accuracy_ratio": ">= 0.99", "round_time_ratio": "<= 1.15"},
            "deployment": deploy, "simulation": sim}


if __name__ == "__main__":
    main()

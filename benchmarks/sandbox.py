"""What the bundle sandbox costs (issue 15): the same Flower jobs with ``[sandbox] mode = "off"`` and ``"bwrap"``.

Both modes run the same code path (declared inputs materialised, one worker process per job speaking the same
wire protocol); ``off`` only drops bubblewrap and its namespaces, rlimits and cgroup. So the ratio is the cage
itself. Per model, on one SuperLink with a SuperNode per node (``benchmarks/fl.py``'s deployment path), jobs
alternate off / bwrap with the same seed per pair (so both train the same model), after one warm-up job:

* round time: wall time between the ends of consecutive rounds (rounds 2..R, steady state);
* job start: submission to completion minus R steady rounds (SuperNode executors open the job: inputs written,
  the sandbox worker started, torch and the bundle imported, data loaded; plus Flower's own job start);
* fixed cost per sandbox start, measured apart: :class:`incisive.node.fl.sandboxed.BundleJob` start + ``init``
  on tabular-risk at one node, off vs bwrap (median of ``--starts``).

Writes benchmarks/results/sandbox.json. On a 2-core machine: about 8 min with the defaults.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/fl.py, the deployment path

from fl import _image_nodes, _jobs, _load, _nodes, _workspace

from incisive.demo.synth import CohortSpec
from incisive.federated.bundle import shipped_bundle
from incisive.federated.service import JobOptions
from incisive.node.fl.sandboxed import BundleJob
from incisive.node.home import Node
from incisive.node.policy import update_policy

MODES = ("off", "bwrap")


def _set_mode(nodes: dict[str, Node], mode: str) -> None:
    for n in nodes.values():
        update_policy(n.home, sandbox_mode=mode)


def _model(root: Path, model: str, nodes: dict[str, Node], rounds: int, pairs: int,
           timeout: float) -> dict[str, Any]:
    ws = _workspace(root, model, nodes)
    out: dict[str, dict[str, list[float]]] = {m: {"round_s": [], "job_start_s": [], "loss": []} for m in MODES}
    load_before = _load()

    def options(rep: int) -> JobOptions:
        mode = MODES[rep % 2]
        _set_mode(nodes, mode)  # read by each node when the job's first task opens its sandbox
        return JobOptions(rounds=rounds, round_timeout=timeout, seed=max(0, rep - 1) // 2)

    for rep, job, total in _jobs(root, ws, model, nodes, 2 * pairs, options):
        if rep == 0:
            continue  # warm-up (mode off): SuperNodes connect, executors import what they import
        mode = MODES[rep % 2]
        recs = job.rounds()
        ends = [r["t"] for r in recs if r["phase"] == "evaluate"]
        steady = [b - a for a, b in itertools.pairwise(ends)]
        out[mode]["round_s"] += steady
        out[mode]["job_start_s"].append(total - rounds * statistics.median(steady))
        fits = [r for r in recs if r["phase"] == "fit"]
        out[mode]["loss"].append(statistics.mean(float(x["loss"]) for x in fits[-1]["nodes"]))
    med = {m: statistics.median(out[m]["round_s"]) for m in MODES}
    return {"model": model, "nodes": len(nodes), "rounds": rounds, "pairs": pairs, **out,
            "median_round_s": med, "round_time_ratio_bwrap_vs_off": med["bwrap"] / med["off"],
            "same_final_loss": all(abs(a - b) < 1e-6 for a, b in zip(out["off"]["loss"], out["bwrap"]["loss"],
                                                                       strict=True)),
            "load_before": load_before, "load_after": _load()}


def _starts(root: Path, n: int) -> dict[str, Any]:
    node = _nodes(root / "start-node", 1, "iid")["hospital-00"]
    path = shipped_bundle("tabular-risk")
    manifest = json.loads((path / "manifest.json").read_text())
    took: dict[str, list[float]] = {m: [] for m in MODES}
    for i in range(n):
        for mode in MODES:
            update_policy(node.home, sandbox_mode=mode)
            t = time.perf_counter()
            with BundleJob(node, path, manifest, f"start-{mode}-{i}", "tabular-risk:1") as job:
                job.initial()
            took[mode].append(time.perf_counter() - t)
    node.catalogue.dispose()
    med = {m: statistics.median(took[m]) for m in MODES}
    return {"starts": took, "median_s": med, "fixed_cost_s": med["bwrap"] - med["off"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=3, help="measured (off, bwrap) job pairs per model")
    ap.add_argument("--image-patients", type=int, default=90)
    ap.add_argument("--image-slices", type=int, default=8)
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sandbox.json")
    args = ap.parse_args()
    result: dict[str, Any] = {"machine_load_start": _load()}
    with tempfile.TemporaryDirectory(prefix="incisive-bench-sandbox-") as tmp:
        root = Path(tmp)
        result["job_start"] = _starts(root, args.starts)
        print(json.dumps(result["job_start"]["median_s"]), flush=True)
        tab = _nodes(root / "tab" / "nodes", 3, "iid")
        result["tabular-risk"] = _model(root / "tab", "tabular-risk", tab, args.rounds, args.pairs, 120)
        print(json.dumps(result["tabular-risk"]["median_round_s"]), flush=True)
        img, cohort = _image_nodes(root / "img" / "nodes", 3, CohortSpec(
            patients=args.image_patients, seed=7, size=32, ct_slices=args.image_slices,
            mr_slices=args.image_slices))
        result["lesion-cnn"] = {**_model(root / "img", "lesion-cnn", img, args.rounds, args.pairs, 300),
                                "cohort": cohort}
        print(json.dumps(result["lesion-cnn"]["median_round_s"]), flush=True)
        for n in (*tab.values(), *img.values()):
            n.catalogue.dispose()
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: (v.get("round_time_ratio_bwrap_vs_off") if isinstance(v, dict) else v)
                      for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()

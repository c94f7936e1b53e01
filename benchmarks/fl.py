"""Central vs federated training of the tabular-risk model on scikit-learn's breast-cancer data.

Federated = FedAvg (weighted by sample count) over 3 and 10 simulated nodes, IID and non-IID (Dirichlet 0.5),
simulated in-process with the same engine the ClientApp uses. Reported per setting: accuracy ratio
(federated / central, same test rows) and per-round wall time over pure local training of the same epochs.
Flower's process overhead (a ``flwr-clientapp`` process per node and message) is NOT in these figures; the
integration tests measure real SuperLink/SuperNode runs. Writes benchmarks/results/fl.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from incisive.federated import engine, partition
from incisive.federated.bundle import bundle_digest, load_task, shipped_bundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    path = shipped_bundle("tabular-risk")
    manifest = json.loads((path / "manifest.json").read_text())
    task = load_task(path, bundle_digest(path))
    x_raw, y, _ = partition.breast_cancer()
    x = task.transform(manifest, x_raw)
    rng = np.random.default_rng(0)
    test = rng.random(len(y)) < 0.25
    rounds, epochs, repeats = (5, 2, 1) if args.quick else (10, 2, 3)
    results = []
    for parts in (3, 10):
        for scheme in ("iid", "non-iid"):
            train_idx = np.flatnonzero(~test)
            split = [train_idx[p] for p in partition.partition(y[train_idx], parts, scheme, seed=1)]
            c_acc, f_acc, c_round, f_round = [], [], [], []
            for rep in range(repeats + 1):
                torch.manual_seed(rep)
                central = task.build_model(manifest)
                t = time.perf_counter()
                engine.train(central, x[train_idx], y[train_idx], epochs=rounds * epochs, lr=0.05, batch_size=32)
                c_time = (time.perf_counter() - t) / rounds
                torch.manual_seed(rep)
                glob = engine.get_weights(task.build_model(manifest))
                t = time.perf_counter()
                for _ in range(rounds):
                    updates, sizes = [], []
                    for idx in split:
                        m = task.build_model(manifest)
                        engine.set_weights(m, glob)
                        engine.train(m, x[idx], y[idx], epochs=epochs, lr=0.05, batch_size=32)
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
            results.append({"nodes": parts, "split": scheme, "central_accuracy": c_acc, "federated_accuracy": f_acc,
                            "accuracy_ratio": statistics.median(f_acc) / statistics.median(c_acc),
                            "central_round_s": c_round, "federated_round_s": f_round,
                            "round_time_ratio": statistics.median(f_round) / statistics.median(c_round)})
            print(json.dumps({k: v for k, v in results[-1].items() if "ratio" in k or k in ("nodes", "split")}))
    out = {"benchmark": "fl", "input": "scikit-learn breast-cancer (569 rows, 30 features), 25% test rows",
           "peer": "centralized training of the same model on the pooled rows", "rounds": rounds,
           "local_epochs": epochs, "repeats": repeats, "quick": args.quick, "torch": torch.__version__,
           "targets": {"accuracy_ratio": ">= 0.99", "round_time_ratio": "<= 1.15"}, "results": results}
    target = Path(__file__).parent / "results" / "fl.json"
    target.write_text(json.dumps(out, indent=2))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

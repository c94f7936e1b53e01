"""Training curves of a federated job (JSON + PNG): per round the nodes' losses, AUCs, ε and the pooled metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from incisive.federated.jobs import Job


def curves(job: Job) -> dict[str, Any]:
    out: dict[str, Any] = {"job": job.id, "model": job.spec.get("model"), "rounds": []}
    by_round: dict[int, dict[str, Any]] = {}
    for r in job.rounds():
        entry = by_round.setdefault(int(r["round"]), {"round": int(r["round"])})
        if r["phase"] == "fit":
            entry["train_loss"] = {n["node"]: n.get("loss") for n in r["nodes"]}
            entry["participants"] = len(r["nodes"])
            entry["failures"] = len(r["failures"])
            eps = {n["node"]: n["dp_epsilon"] for n in r["nodes"] if "dp_epsilon" in n}
            if eps:
                entry["dp_epsilon"] = eps
        else:
            entry["pooled"] = r.get("pooled")
            entry["auc"] = {n["node"]: n.get("auc") for n in r["nodes"]}
    out["rounds"] = [by_round[k] for k in sorted(by_round)]
    return out


def plot(job: Job, out_dir: Path | None = None) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(job)
    out_dir = out_dir or job.path
    json_path, png_path = out_dir / "metrics.json", out_dir / "metrics.png"
    json_path.write_text(json.dumps(data, indent=2))
    rounds = [r for r in data["rounds"] if r.get("pooled")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    xs = [r["round"] for r in rounds]
    ax1.plot(xs, [r["pooled"]["loss"] for r in rounds], marker="o", label="pooled")
    ax2.plot(xs, [r["pooled"]["auc"] for r in rounds], marker="o", label="pooled AUC")
    ax2.plot(xs, [r["pooled"]["accuracy"] for r in rounds], marker="s", label="pooled accuracy")
    nodes = sorted({n for r in rounds for n in r.get("auc", {})})
    for n in nodes:
        ax2.plot(xs, [r["auc"].get(n) for r in rounds], linestyle="--", alpha=0.6, label=f"AUC {n}")
    ax1.set(title="evaluation loss", xlabel="round")
    ax2.set(title="metrics", xlabel="round", ylim=(0, 1.02))
    ax2.legend(fontsize=7)
    fig.suptitle(f"{data['model']} · job {job.id}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return json_path, png_path

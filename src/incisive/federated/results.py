"""Training curves (JSON + PNG) and node-local inference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from incisive.federated import engine
from incisive.federated.approval import approval, verified_local_bundle
from incisive.federated.bundle import RegisteredBundle, load_task
from incisive.federated.jobs import Job, now
from incisive.node.home import Node


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


def infer(node: Node, bundle: RegisteredBundle, job: Job, series: list[str] | None = None) -> dict[str, Any]:
    """Score this node's data with a trained model; results stay at the node. Returns a summary (counts only)."""
    m = bundle.manifest
    path = verified_local_bundle(node.home, m.name, m.version, bundle.digest)
    if path is None:
        raise PermissionError(f"bundle {m.ref} is not approved at this node")
    manifest = json.loads((path / "manifest.json").read_text())
    task = load_task(path, bundle.digest)
    data = task.load_data(node, manifest, "all")
    keep = [i for i, k in enumerate(data.keys) if not series or k.split("/")[0] in series]
    model = task.build_model(manifest)
    engine.set_weights(model, job.load_model())
    scores: Any = engine.predict(model, data.x[keep]) if keep else []
    out_dir = node.home / "results" / "inference"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{m.name}-{m.version}-{job.id}.jsonl"
    with out.open("w", encoding="utf-8") as fh:
        for i, s in zip(keep, scores, strict=True):
            fh.write(json.dumps({"key": data.keys[i], "score": float(s), "positive": bool(s >= 0.5)}) + "\n")
    positives = int(sum(1 for s in scores if s >= 0.5))
    summary = {"model": m.ref, "job": job.id, "items": len(keep), "positive": positives, "at": now(),
               "results": str(out.relative_to(node.home))}
    entry = approval(node.home, m.name, m.version) or {}
    summary["shareable"] = bool(entry.get("share_inference_summary"))
    (out_dir / f"{out.stem}.summary.json").write_text(json.dumps(summary, indent=2))
    return summary

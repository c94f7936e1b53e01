"""The federated-learning operations the sandbox child runs on a bundle (inside the sandbox, never outside).

Each takes the bundle's task module, its manifest, the request's JSON ``args`` and arrays, and returns JSON
metrics plus arrays; the trusted side checks both against what it declared (:data:`FIT_METRICS`,
:data:`EVALUATE_METRICS`, the parameters' names/shapes/dtypes, one score per item) before anything is used or sent.
Parameters travel as arrays named ``p0 … pN`` in ``state_dict`` order.

* ``init``: ``build_model`` under a seed → its parameters (the platform's initial model);
* ``size``: rows of a split (the node sizes DP-SGD's noise from it);
* ``fit``: local training (FedProx, DP-SGD with the noise multiplier the node computed) → new parameters;
* ``evaluate``: loss, accuracy, AUC, and the two per-class score histograms as integer arrays;
* ``infer``: one score per item, with the item's index in ``items.json`` (never a key string).

Data read by ``load_data`` is cached per split for the life of the sandbox (one job). ``init`` here replaces the
generic one of :mod:`incisive.federated.sandbox.ops` (seeded, parameters named ``p0 … pN``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from incisive.federated.task import Dataset, FileSource

FIT_METRICS = ("n", "loss", "steps", "dp_sample_rate")
EVALUATE_METRICS = ("n", "loss", "accuracy", "auc")
EVALUATE_ARRAYS = ("neg", "pos")
Arrays = dict[str, np.ndarray]
Reply = tuple[dict[str, Any], Arrays]

_DATA: dict[tuple[str, str], Dataset] = {}


def params(arrays: Arrays) -> list[np.ndarray]:
    return [arrays[f"p{i}"] for i in range(len(arrays))]


def named(weights: list[np.ndarray]) -> Arrays:
    return {f"p{i}": np.ascontiguousarray(w) for i, w in enumerate(weights)}


def _root(args: dict[str, Any]) -> str:
    from incisive.federated.sandbox.paths import inputs_dir

    root = inputs_dir()
    if root is None:
        raise RuntimeError("this sandbox has no input directory")
    return str(root)


def _data(task: ModuleType, manifest: dict[str, Any], args: dict[str, Any], split: str) -> Dataset:
    key = (_root(args), split)
    if key not in _DATA:
        data: Dataset = task.load_data(FileSource(_root(args)), manifest, split)
        _DATA[key] = data
    return _DATA[key]


def _model(task: ModuleType, manifest: dict[str, Any], arrays: Arrays) -> Any:
    from incisive.federated import engine

    model = task.build_model(manifest)
    engine.set_weights(model, params(arrays))
    return model


def init(task: ModuleType, manifest: dict[str, Any], args: dict[str, Any], arrays: Arrays) -> Reply:
    import torch

    from incisive.federated import engine

    torch.manual_seed(int(args.get("seed", 0)))
    weights = engine.get_weights(task.build_model(manifest))
    return {"names": [f"p{i}" for i in range(len(weights))]}, named(weights)


def size(task: ModuleType, manifest: dict[str, Any], args: dict[str, Any], arrays: Arrays) -> Reply:
    return {"n": len(_data(task, manifest, args, str(args["split"])))}, {}


def fit(task: ModuleType, manifest: dict[str, Any], args: dict[str, Any], arrays: Arrays) -> Reply:
    from incisive.federated import engine

    data = _data(task, manifest, args, "train")
    model = _model(task, manifest, arrays)
    dp = engine.DPConfig(**args["dp"]) if args.get("dp") else None
    result = engine.train(model, data.x, data.y, epochs=int(args["epochs"]), lr=float(args["lr"]),
                          batch_size=int(args["batch_size"]), proximal_mu=float(args.get("proximal_mu", 0.0)),
                          dp=dp, dp_noise=args.get("dp_noise"), seed=int(args.get("seed", 0)),
                          device=engine.device_for())
    metrics = {"n": len(data), "loss": float(result["loss"]), "steps": int(result["steps"])}
    if "dp_sample_rate" in result:
        metrics["dp_sample_rate"] = float(result["dp_sample_rate"])
    return metrics, named(engine.get_weights(model.to("cpu")))


def evaluate(task: ModuleType, manifest: dict[str, Any], args: dict[str, Any],
             arrays: Arrays) -> Reply:
    from incisive.federated import engine

    data = _data(task, manifest, args, "test")
    m = engine.evaluate(_model(task, manifest, arrays), data.x, data.y, engine.device_for())
    metrics = {"n": int(m["n"]), "loss": float(m["loss"]), "accuracy": engine.finite(m["accuracy"]),
               "auc": engine.finite(m["auc"])}
    return metrics, {"neg": np.asarray(m["neg"], dtype=np.int64), "pos": np.asarray(m["pos"], dtype=np.int64)}


def infer(task: ModuleType, manifest: dict[str, Any], args: dict[str, Any], arrays: Arrays) -> Reply:
    from incisive.federated import engine

    items = json.loads((Path(_root(args)) / "items.json").read_text())
    index = {key: i for i, key in enumerate(items)}
    data = _data(task, manifest, args, "all")
    keep = [i for i, k in enumerate(data.keys) if k in index]
    scores = engine.predict(_model(task, manifest, arrays), data.x[keep]) if keep else np.zeros(0)
    return {"n": len(keep)}, {"scores": np.asarray(scores, dtype=np.float64).reshape(-1),
                              "index": np.asarray([index[data.keys[i]] for i in keep], dtype=np.int64)}


FL_OPS = {"init": init, "size": size, "fit": fit, "evaluate": evaluate, "infer": infer}

"""The Flower ClientApp, run at each node (in the warm executor of :mod:`incisive.node.fl.runtime`).

Reads ``node-dir`` from the SuperNode's node config, re-hashes its node-local copy of the bundle and refuses
(non-OK status, nothing read) unless that hash is approved; otherwise trains/evaluates on its own catalogue and
store (through :class:`incisive.node.fl.data.NodeData`) and returns parameters + scalar metrics only. The
platform's side is :mod:`incisive.federated.server_app`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from flwr.client import Client
from flwr.clientapp import ClientApp
from flwr.common import (
    Code,
    Context,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    Message,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)

from incisive.common.fsio import atomic_write_text
from incisive.federated import engine
from incisive.federated.bundle import load_task, read_manifest
from incisive.node.fl.approval import verified_local_bundle
from incisive.node.fl.data import NodeData
from incisive.node.home import Node

EMPTY = Parameters(tensors=[], tensor_type="numpy.ndarray")

# The node's warm executor (incisive.node.fl.runtime) runs every task of a job in one process: the opened node and
# the rows a bundle read are kept for the job's later rounds and phases (only the current job's entries are kept).
_NODES: dict[str, Any] = {}
_DATA: dict[tuple[str, str, str, str], Any] = {}


def _cached_data(task: Any, node: Any, manifest: dict[str, Any], key: tuple[str, str, str, str]) -> Any:
    if key not in _DATA:
        for old in [k for k in _DATA if k[:2] != key[:2]]:
            del _DATA[old]  # another job (or node): drop it
        _DATA[key] = task.load_data(NodeData(node), manifest, key[3])
    return _DATA[key]


class NodeClient(Client):
    def __init__(self, context: Context) -> None:
        self.context = context
        self.cfg = dict(context.run_config)
        self.home = Path(str(context.node_config.get("node-dir", ""))).expanduser()

    def _open(self) -> tuple[Any, dict[str, Any], Any] | str:
        """(node, manifest, task) when the bundle is approved here, else the refusal reason."""
        name, version, digest = str(self.cfg["model"]), str(self.cfg["version"]), str(self.cfg["sha256"])
        path = verified_local_bundle(self.home, name, version, digest)
        if path is None:
            return f"bundle {name}:{version} ({digest[:12]}) is not approved at this node"
        manifest = json.loads((path / "manifest.json").read_text())
        read_manifest(path)
        home = str(self.home.resolve())
        if home not in _NODES:
            _NODES[home] = Node.open(self.home)
        return _NODES[home], manifest, load_task(path, digest)

    def _data(self, task: Any, node: Any, manifest: dict[str, Any], split: str) -> Any:
        key = (str(self.home.resolve()), str(self.cfg.get("job-id", "")), str(self.cfg["sha256"]), split)
        return _cached_data(task, node, manifest, key)

    def _node_id(self) -> str:
        try:
            from incisive.common.settings import NodeSettings

            return str(NodeSettings.load(self.home).node_id)
        except Exception:
            return "unknown"

    def get_parameters(self, ins: GetParametersIns) -> GetParametersRes:
        opened = self._open()
        if isinstance(opened, str):
            return GetParametersRes(Status(Code.GET_PARAMETERS_NOT_IMPLEMENTED, opened), EMPTY)
        _, manifest, task = opened
        return GetParametersRes(Status(Code.OK, ""), ndarrays_to_parameters(
            engine.get_weights(task.build_model(manifest))))

    def fit(self, ins: FitIns) -> FitRes:
        opened = self._open()
        if isinstance(opened, str):
            return FitRes(Status(Code.FIT_NOT_IMPLEMENTED, opened), EMPTY, 0, {"node": self._node_id(),
                                                                               "refused": opened})
        node, manifest, task = opened
        data = self._data(task, node, manifest, "train")
        model = task.build_model(manifest)
        engine.set_weights(model, parameters_to_ndarrays(ins.parameters))
        p = manifest["params"]
        epochs = int(self.cfg.get("local-epochs") or p["epochs"])
        batch = int(p["batch_size"])
        dp = None
        noise = None
        state_file = self.home / "fl-state" / f"{self.cfg.get('job-id', 'job')}.json"
        state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {"steps": 0}
        if float(self.cfg.get("dp-epsilon", 0.0)) > 0 and len(data):
            dp = engine.DPConfig(float(self.cfg["dp-epsilon"]), float(self.cfg.get("dp-delta", 1e-5)),
                                 float(self.cfg.get("dp-max-grad-norm", 1.0)))
            steps_per_epoch = math.ceil(len(data) / batch)
            total = int(self.cfg["num-rounds"]) * epochs * steps_per_epoch
            noise = engine.noise_multiplier(dp, 1 / steps_per_epoch, total)
        started = time.perf_counter()
        result = engine.train(model, data.x, data.y, epochs=epochs, lr=float(p["lr"]), batch_size=batch,
                              proximal_mu=float(ins.config.get("proximal_mu", 0.0)), dp=dp, dp_noise=noise,
                              seed=int(ins.config.get("round", 0)), device=engine.device_for())
        metrics: dict[str, Any] = {"node": node.settings.node_id, "n": len(data), "loss": float(result["loss"]),
                                   "train_seconds": time.perf_counter() - started}
        if dp is not None and noise is not None:
            state["steps"] += int(result["steps"])
            metrics["dp_epsilon"] = engine.spent_epsilon(
                [(noise, float(result["dp_sample_rate"]), state["steps"])], dp.delta)
            state_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(state_file, json.dumps(state))  # the privacy spent so far: never torn or lost
        weights = engine.get_weights(model.to("cpu"))
        return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), len(data), metrics)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        opened = self._open()
        if isinstance(opened, str):
            return EvaluateRes(Status(Code.EVALUATE_NOT_IMPLEMENTED, opened), 0.0, 0,
                               {"node": self._node_id(), "refused": opened})
        node, manifest, task = opened
        data = self._data(task, node, manifest, "test")
        model = task.build_model(manifest)
        engine.set_weights(model, parameters_to_ndarrays(ins.parameters))
        m = engine.evaluate(model, data.x, data.y, engine.device_for())
        metrics = {"node": node.settings.node_id, "n": m["n"], "accuracy": engine.finite(m["accuracy"]),
                   "auc": engine.finite(m["auc"]), "neg": engine.hist_text(m["neg"]), "pos": engine.hist_text(m["pos"])}
        return EvaluateRes(Status(Code.OK, ""), float(m["loss"]), int(m["n"]), metrics)


def _secagg_when_asked(msg: Message, ctx: Context, call_next: Any) -> Message:
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        out: Message = secaggplus_mod(msg, ctx, call_next)
        return out
    out = call_next(msg, ctx)
    return out


client_app = ClientApp(client_fn=lambda context: NodeClient(context).to_client(), mods=[_secagg_when_asked])

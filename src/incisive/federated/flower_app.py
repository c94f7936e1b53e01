"""The Flower ServerApp and ClientApp (run by ``flwr-serverapp`` / ``flwr-clientapp`` in deployment mode).

ClientApp, at each node: reads ``node-dir`` from the SuperNode's node config, re-hashes its node-local copy of
the bundle and refuses (non-OK status, nothing read) unless that hash is approved; otherwise trains/evaluates on
its own catalogue and store and returns parameters + scalar metrics only.

ServerApp: FedAvg or FedProx (weighted by sample count), every round bounded by ``round-timeout`` (a dropped node
costs at most one timeout), optional SecAgg+ for the fit phase; records rounds, what it received and the final
model in the job directory. Its Grid pulls replies adaptively (:class:`TimedGrid`) and, on flwr 1.42 only, retries
reply objects after 20 ms (``flwr.superlink.grid.http_grid.pull_objects`` replaced by
:func:`incisive.compat.flwr_1_42.install_quick_object_pulls`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
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
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg, FedProx
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from incisive.federated import engine
from incisive.federated.approval import verified_local_bundle
from incisive.federated.bundle import Registry, load_task, read_manifest
from incisive.federated.jobs import Job

EMPTY = Parameters(tensors=[], tensor_type="numpy.ndarray")
# reply pulls (each costs the SuperLink a PullMessages): REPLY_FIRST_POLL_S after the push, growing by
# REPLY_POLL_GROWTH of the time since, at most REPLY_POLL_S
REPLY_FIRST_POLL_S, REPLY_POLL_GROWTH, REPLY_POLL_S = 0.02, 0.1, 0.1
ALLOWED_METRICS = {"node", "n", "loss", "accuracy", "auc", "neg", "pos", "dp_epsilon", "train_seconds", "refused"}


def _hist(values: list[int]) -> str:
    return ",".join(str(v) for v in values)


def _unhist(text: Any) -> list[int]:
    return [int(v) for v in str(text).split(",")] if text else []


# ---------------------------------------------------------------- client (runs at the node)
# The node's warm executor (node_runtime) runs every task of a job in one process: the opened node and the rows a
# bundle read are kept for the job's later rounds and phases (only the current job's entries are kept).
_NODES: dict[str, Any] = {}
_DATA: dict[tuple[str, str, str, str], Any] = {}


def _cached_data(task: Any, node: Any, manifest: dict[str, Any], key: tuple[str, str, str, str]) -> Any:
    if key not in _DATA:
        for old in [k for k in _DATA if k[:2] != key[:2]]:
            del _DATA[old]  # another job (or node): drop it
        _DATA[key] = task.load_data(node, manifest, key[3])
    return _DATA[key]


class NodeClient(Client):
    def __init__(self, context: Context) -> None:
        self.context = context
        self.cfg = dict(context.run_config)
        self.home = Path(str(context.node_config.get("node-dir", ""))).expanduser()

    def _open(self) -> tuple[Any, dict[str, Any], Any] | str:
        """(node, manifest, task) when the bundle is approved here, else the refusal reason."""
        from incisive.node.home import Node

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
            state_file.write_text(json.dumps(state))
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
                   "auc": engine.finite(m["auc"]), "neg": _hist(m["neg"]), "pos": _hist(m["pos"])}
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


# ---------------------------------------------------------------- server (runs at the platform)
class TimedGrid:
    """A Grid whose every send_and_receive is bounded by the round timeout, polls for replies adaptively
    (:data:`REPLY_FIRST_POLL_S` after the push, growing by :data:`REPLY_POLL_GROWTH` of the time since, at most
    :data:`REPLY_POLL_S`; Flower's own loop sleeps 3 s between pulls) and records what each reply carried on the
    wire: array bytes in the clear vs. config records (under SecAgg+ the masked vectors travel there)."""

    def __init__(self, grid: Any, timeout: float, job: Job | None = None) -> None:
        self._grid, self._timeout, self._job = grid, timeout, job

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        ids = set(self._grid.push_messages(messages))
        pushed = time.monotonic()
        deadline = pushed + (timeout or self._timeout)
        replies: list[Any] = []
        while ids:
            got = list(self._grid.pull_messages(ids))
            replies += got
            ids.difference_update(m.metadata.reply_to_message_id for m in got)
            if not ids or time.monotonic() >= deadline:
                break
            time.sleep(min(REPLY_POLL_S, REPLY_FIRST_POLL_S + REPLY_POLL_GROWTH * (time.monotonic() - pushed)))
        if self._job is not None:
            for msg in replies:
                self._job.add_received(_wire_record(msg))
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def _wire_record(msg: Any) -> dict[str, Any]:
    """What one reply carried: counts and sizes only, never values."""
    rec: dict[str, Any] = {"phase": "wire", "type": str(msg.metadata.message_type),
                           "src": str(msg.metadata.src_node_id), "error": msg.has_error()}
    if not msg.has_error():
        arrays = [a for r in msg.content.array_records.values() for a in r.values()]
        rec.update(arrays=len(arrays), array_bytes=sum(len(a.data) for a in arrays),
                   configs=sorted(k for r in msg.content.config_records.values() for k in r))
    return rec


def _received(job: Job, phase: str, rnd: int, results: list[Any]) -> None:
    for _, res in results:
        tensors = list(getattr(getattr(res, "parameters", None), "tensors", []) or [])
        job.add_received({"phase": phase, "round": rnd, "node": str(res.metrics.get("node", "?")),
                          "tensors": len(tensors), "bytes": sum(len(t) for t in tensors),
                          "sha256": hashlib.sha256(b"".join(tensors)).hexdigest(),
                          "metrics": {k: type(v).__name__ for k, v in res.metrics.items()},
                          "num_examples": int(res.num_examples)})


def _failures(failures: list[Any]) -> list[dict[str, str]]:
    out = []
    for f in failures:
        if isinstance(f, BaseException):
            out.append({"node": "?", "reason": str(f)[:200]})
        else:
            out.append({"node": str(f[1].metrics.get("node", "?")), "reason": f[1].status.message[:200]})
    return out


def recording_strategy(base: type, job: Job, **kwargs: Any) -> Any:
    class Recording(base):  # type: ignore[misc]
        def aggregate_fit(self, rnd: int, results: list[Any], failures: list[Any]) -> Any:
            _received(job, "fit", rnd, results)
            params, metrics = super().aggregate_fit(rnd, results, failures)
            nodes = [{k: v for k, v in r.metrics.items() if k in ALLOWED_METRICS} | {"num_examples": r.num_examples}
                     for _, r in results]
            job.add_round({"phase": "fit", "round": rnd, "nodes": nodes, "failures": _failures(failures),
                           "t": time.time()})
            if params is not None:
                job.save_model(parameters_to_ndarrays(params))
            job.set_server_state(phase="fit", round=rnd)
            return params, metrics

        def aggregate_evaluate(self, rnd: int, results: list[Any], failures: list[Any]) -> Any:
            _received(job, "evaluate", rnd, results)
            nodes, neg, pos = [], np.zeros(engine.HIST_BINS, int), np.zeros(engine.HIST_BINS, int)
            for _, r in results:
                n, p = _unhist(r.metrics.get("neg")), _unhist(r.metrics.get("pos"))
                if len(n) == engine.HIST_BINS:
                    neg, pos = neg + np.asarray(n), pos + np.asarray(p)
                nodes.append({k: r.metrics[k] for k in ("node", "n", "accuracy", "auc") if k in r.metrics}
                             | {"loss": r.loss})
            total = sum(int(x["n"]) for x in nodes) or 1
            pooled = {"n": total, "loss": sum(x["loss"] * int(x["n"]) for x in nodes) / total,
                      "accuracy": sum(float(x["accuracy"]) * int(x["n"]) for x in nodes) / total,
                      "auc": engine.pooled_auc(neg.tolist(), pos.tolist())}
            job.add_round({"phase": "evaluate", "round": rnd, "nodes": nodes, "pooled": pooled,
                           "failures": _failures(failures), "t": time.time()})
            job.set_server_state(phase="evaluate", round=rnd, pooled=pooled)
            return pooled["loss"], {"auc": pooled["auc"], "accuracy": pooled["accuracy"]}

    return Recording(**kwargs)


server_app = ServerApp()


@server_app.main()
def main(grid: Any, context: Context) -> None:
    from flwr.superlink.grid import http_grid

    from incisive.compat import flwr_1_42

    flwr_1_42.install_quick_object_pulls(http_grid)
    cfg = dict(context.run_config)
    job = Job(Path(str(cfg["job-dir"])))
    job.set_server_state(phase="starting", round=0, finished=False)
    try:
        _serve(grid, context, cfg, job)
    except Exception as exc:
        job.set_server_state(phase="failed", finished=True, error=str(exc)[:500])
        raise
    job.set_server_state(phase="completed", finished=True)


def _serve(grid: Any, context: Context, cfg: dict[str, Any], job: Job) -> None:
    bundle = Registry(Path(str(cfg["registry"]))).get(str(cfg["model"]), str(cfg["version"]))
    if bundle.digest != cfg["sha256"]:
        raise RuntimeError("registered bundle does not match the job's hash")
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    task = load_task(bundle.path, bundle.digest)
    import torch

    torch.manual_seed(int(cfg.get("seed", 0)))
    init = str(cfg.get("init-model", ""))
    weights = Job(Path(init)).load_model() if init else engine.get_weights(task.build_model(manifest))
    timeout = float(cfg["round-timeout"])
    min_nodes = int(cfg["min-nodes"])
    evaluate_only = cfg.get("op") == "evaluate"
    kwargs: dict[str, Any] = dict(
        fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=min_nodes, min_evaluate_clients=min_nodes,
        min_available_clients=min_nodes, accept_failures=True,
        initial_parameters=ndarrays_to_parameters(weights),
        on_fit_config_fn=lambda rnd: {"round": rnd},
        fit_metrics_aggregation_fn=lambda m: {}, evaluate_metrics_aggregation_fn=lambda m: {})
    base: type = FedAvg
    if cfg.get("strategy") == "fedprox":
        base, kwargs["proximal_mu"] = FedProx, float(cfg.get("proximal-mu", 0.1))
    strategy = recording_strategy(base, job, **kwargs)
    rounds = 1 if evaluate_only else int(cfg["num-rounds"])
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds, round_timeout=timeout),
                           strategy=strategy)
    wf: dict[str, Any] = {}
    if evaluate_only:
        wf["fit_workflow"] = lambda g, c: None
    elif cfg.get("secagg"):
        n = max(2, min_nodes)
        wf["fit_workflow"] = SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=max(2, n - 1),
                                                timeout=timeout)
    timed: Any = TimedGrid(grid, timeout, job)
    DefaultWorkflow(**wf)(timed, legacy)
    if not evaluate_only:
        final = legacy.state.array_records.get("parameters")
        if final is not None:
            job.save_model([a.numpy() for a in final.values()])

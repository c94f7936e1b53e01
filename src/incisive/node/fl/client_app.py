"""The Flower ClientApp, run at each node (in the warm executor of :mod:`incisive.node.fl.runtime`).

Reads ``node-dir`` from the SuperNode's node config, re-hashes its node-local copy of the bundle and refuses
(non-OK status, nothing read) unless that hash is approved; otherwise the bundle's code runs in the job's sandbox
(:class:`incisive.node.fl.sandboxed.BundleJob`: declared inputs in, checked parameters and metrics out), one
sandbox worker per job kept across its rounds. Nothing of the bundle is imported in this process. The platform's
side is :mod:`incisive.federated.server_app`.
"""

from __future__ import annotations

import atexit
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
from incisive.federated.bundle import read_manifest
from incisive.node.fl.approval import verified_local_bundle
from incisive.node.home import Node

EMPTY = Parameters(tensors=[], tensor_type="numpy.ndarray")

# The node's warm executor (incisive.node.fl.runtime) runs every task of a job in one process: the opened node and
# the job's sandbox (with the data its bundle loaded) are kept for the job's later rounds and phases; a task of
# another job closes the previous job's sandbox.
_NODES: dict[str, Any] = {}
_JOBS: dict[tuple[str, str, str], Any] = {}


def _close_jobs(keep: tuple[str, str, str] | None = None) -> None:
    for key in [k for k in _JOBS if k != keep]:
        _JOBS.pop(key).close()


atexit.register(_close_jobs)


class NodeClient(Client):
    def __init__(self, context: Context) -> None:
        self.context = context
        self.cfg = dict(context.run_config)
        self.home = Path(str(context.node_config.get("node-dir", ""))).expanduser()

    def _open(self) -> tuple[Any, dict[str, Any], Any] | str:
        """(node, manifest, the job's sandbox) when the bundle is approved here and a sandbox starts, else the
        refusal reason (a sandbox failure is a refusal too: the type of failure only, never bundle output)."""
        from incisive.federated.sandbox import SandboxError
        from incisive.node.fl.sandboxed import BundleJob, SandboxRefused

        name, version, digest = str(self.cfg["model"]), str(self.cfg["version"]), str(self.cfg["sha256"])
        path = verified_local_bundle(self.home, name, version, digest)
        if path is None:
            return f"bundle {name}:{version} ({digest[:12]}) is not approved at this node"
        manifest = json.loads((path / "manifest.json").read_text())
        read_manifest(path)
        home = str(self.home.resolve())
        if home not in _NODES:
            _NODES[home] = Node.open(self.home)
        key = (home, str(self.cfg.get("job-id", "")), digest)
        _close_jobs(keep=key)
        if key not in _JOBS:
            job = BundleJob(_NODES[home], path, manifest, key[1] or "job", f"{name}:{version}")
            try:
                job.start()
            except (SandboxRefused, SandboxError) as exc:
                return str(exc)[:300]
            _JOBS[key] = job
        return _NODES[home], manifest, _JOBS[key]

    def _failed(self, exc: Exception) -> str:
        key = (str(self.home.resolve()), str(self.cfg.get("job-id", "")), str(self.cfg["sha256"]))
        job = _JOBS.pop(key, None)
        if job is not None:
            job.close()  # a failed sandbox is not reused: the next task starts a fresh one
        return str(exc)[:300]

    def _node_id(self) -> str:
        try:
            from incisive.common.settings import NodeSettings

            return str(NodeSettings.load(self.home).node_id)
        except Exception:
            return "unknown"

    def get_parameters(self, ins: GetParametersIns) -> GetParametersRes:
        from incisive.federated.sandbox import SandboxError

        opened = self._open()
        if isinstance(opened, str):
            return GetParametersRes(Status(Code.GET_PARAMETERS_NOT_IMPLEMENTED, opened), EMPTY)
        try:
            weights = opened[2].initial()
        except SandboxError as exc:
            return GetParametersRes(Status(Code.GET_PARAMETERS_NOT_IMPLEMENTED, self._failed(exc)), EMPTY)
        return GetParametersRes(Status(Code.OK, ""), ndarrays_to_parameters(weights))

    def fit(self, ins: FitIns) -> FitRes:
        from incisive.federated.sandbox import SandboxError

        opened = self._open()
        if isinstance(opened, str):
            return FitRes(Status(Code.FIT_NOT_IMPLEMENTED, opened), EMPTY, 0, {"node": self._node_id(),
                                                                               "refused": opened})
        node, manifest, job = opened
        try:
            return self._fit(node, manifest, job, ins)
        except SandboxError as exc:
            reason = self._failed(exc)
            return FitRes(Status(Code.FIT_NOT_IMPLEMENTED, reason), EMPTY, 0, {"node": self._node_id(),
                                                                               "refused": reason})

    def _fit(self, node: Any, manifest: dict[str, Any], job: Any, ins: FitIns) -> FitRes:
        p = manifest["params"]
        epochs = int(self.cfg.get("local-epochs") or p["epochs"])
        batch = int(p["batch_size"])
        n = job.size("train")
        state_file = self.home / "fl-state" / f"{self.cfg.get('job-id', 'job')}.json"
        state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {"steps": 0}
        args: dict[str, Any] = {"epochs": epochs, "lr": float(p["lr"]), "batch_size": batch,
                                "proximal_mu": float(ins.config.get("proximal_mu", 0.0)),
                                "seed": int(ins.config.get("round", 0))}
        dp = None
        if float(self.cfg.get("dp-epsilon", 0.0)) > 0 and n:
            dp = engine.DPConfig(float(self.cfg["dp-epsilon"]), float(self.cfg.get("dp-delta", 1e-5)),
                                 float(self.cfg.get("dp-max-grad-norm", 1.0)))
            steps_per_epoch = math.ceil(n / min(batch, n))
            total = int(self.cfg["num-rounds"]) * epochs * steps_per_epoch
            args["dp"] = {"epsilon": dp.epsilon, "delta": dp.delta, "max_grad_norm": dp.max_grad_norm}
            args["dp_noise"] = engine.noise_multiplier(dp, 1 / steps_per_epoch, total)
        started = time.perf_counter()
        weights, result = job.fit(parameters_to_ndarrays(ins.parameters), args)
        metrics: dict[str, Any] = {"node": node.settings.node_id, "n": n, "loss": float(result["loss"]),
                                   "train_seconds": time.perf_counter() - started}
        if dp is not None:
            # the privacy spent is accounted here, from what the node itself asked for (not from bundle output)
            steps_per_epoch = math.ceil(n / min(batch, n))
            state["steps"] += epochs * steps_per_epoch
            metrics["dp_epsilon"] = engine.spent_epsilon(
                [(float(args["dp_noise"]), 1 / steps_per_epoch, state["steps"])], dp.delta)
            state_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(state_file, json.dumps(state))  # the privacy spent so far: never torn or lost
        return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), n, metrics)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        from incisive.federated.sandbox import SandboxError

        opened = self._open()
        if isinstance(opened, str):
            return EvaluateRes(Status(Code.EVALUATE_NOT_IMPLEMENTED, opened), 0.0, 0,
                               {"node": self._node_id(), "refused": opened})
        node, _, job = opened
        try:
            m = job.evaluate(parameters_to_ndarrays(ins.parameters))
        except SandboxError as exc:
            reason = self._failed(exc)
            return EvaluateRes(Status(Code.EVALUATE_NOT_IMPLEMENTED, reason), 0.0, 0,
                               {"node": self._node_id(), "refused": reason})
        metrics = {"node": node.settings.node_id, "n": int(m["n"]), "accuracy": engine.finite(m["accuracy"]),
                   "auc": engine.finite(m["auc"]), "neg": engine.hist_text(m["neg"]),
                   "pos": engine.hist_text(m["pos"])}
        return EvaluateRes(Status(Code.OK, ""), float(m["loss"]), int(m["n"]), metrics)


class FitRefused(RuntimeError):
    """This node's fit did not run (bundle not approved, sandbox refused, output rejected): under SecAgg+ the node
    drops out of the round visibly instead of uploading a masked zero vector of weight 0."""


def _fit_or_raise(call_next: Any) -> Any:
    """``call_next`` that raises :class:`FitRefused` when the fit answers a non-OK status (message PHI-free)."""
    from flwr.compat.common import recorddict_compat as compat

    def checked(msg: Message, ctx: Context) -> Message:
        out: Message = call_next(msg, ctx)
        if out.has_content() and msg.metadata.message_type == "train":
            res = compat.recorddict_to_fitres(out.content, keep_input=True)
            if res.status.code != Code.OK:
                raise FitRefused(f"fit refused at {res.metrics.get('node', '?')!s}: {res.status.message[:200]}")
        return out

    return checked


def _secagg_when_asked(msg: Message, ctx: Context, call_next: Any) -> Message:
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        out: Message = secaggplus_mod(msg, ctx, _fit_or_raise(call_next))
        return out
    out = call_next(msg, ctx)
    return out


client_app = ClientApp(client_fn=lambda context: NodeClient(context).to_client(), mods=[_secagg_when_asked])

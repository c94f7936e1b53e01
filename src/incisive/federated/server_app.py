"""The Flower ServerApp (run by ``flwr-serverapp`` at the platform; the nodes' ClientApp is
:mod:`incisive.node.fl.client_app`).

ServerApp: FedAvg or FedProx (weighted by sample count), every round bounded by ``round-timeout`` (a dropped node
costs at most one timeout), optional SecAgg+ for the fit phase; records rounds, what it received and the final
model in the job directory. Its Grid pulls replies adaptively (:class:`TimedGrid`) and, on flwr 1.42 only, retries
reply objects after 20 ms (``flwr.superlink.grid.http_grid.pull_objects`` replaced by
:func:`incisive.compat.flwr_1_42.install_quick_object_pulls`).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg, FedProx
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from incisive.federated import engine
from incisive.federated.bundle import Registry
from incisive.federated.jobs import Job

# reply pulls (each costs the SuperLink a PullMessages): REPLY_FIRST_POLL_S after the push, growing by
# REPLY_POLL_GROWTH of the time since, at most REPLY_POLL_S
REPLY_FIRST_POLL_S, REPLY_POLL_GROWTH, REPLY_POLL_S = 0.02, 0.1, 0.1
ALLOWED_METRICS = {"node", "n", "loss", "accuracy", "auc", "neg", "pos", "dp_epsilon", "train_seconds", "refused"}


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


_REFUSED = re.compile(r"fit refused at ([\w.-]+): (.*?)'?>?\"?\)?$")


def _failures(failures: list[Any]) -> list[dict[str, str]]:
    """One entry per failed node: (node, reason). Under SecAgg+ a node's refusal arrives as an error reply
    (:class:`incisive.node.fl.client_app.FitRefused`, "fit refused at <node>: <reason>"), which Flower 1.42's
    SecAggPlusWorkflow lists twice."""
    out: list[dict[str, str]] = []
    for f in failures:
        if isinstance(f, BaseException):
            m = _REFUSED.search(str(f))
            entry = {"node": m[1], "reason": m[2][:200]} if m else {"node": "?", "reason": str(f)[:200]}
        else:
            entry = {"node": str(f[1].metrics.get("node", "?")), "reason": f[1].status.message[:200]}
        if entry not in out:
            out.append(entry)
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
                n, p = engine.hist_values(r.metrics.get("neg")), engine.hist_values(r.metrics.get("pos"))
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


def initial_weights(bundle: Path, job: Job, seed: int, forbidden: list[Path]) -> list[np.ndarray]:
    """The bundle's initial model, built in a sandbox (no network, no view of the platform's files): the
    ServerApp never imports bundle code. The state must be a bounded set of finite numeric arrays."""
    import shutil
    import tempfile

    from incisive.federated.sandbox import Limits, Sandbox, unavailable, validate

    mode = os.environ.get("INCISIVE_PLATFORM_SANDBOX", "bwrap")
    reason = unavailable(mode)
    if reason is not None:
        raise RuntimeError(f"no sandbox for bundle code on the platform ({reason})")
    scratch = Path(tempfile.mkdtemp(prefix="incisive-init-"))

    def check(result: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        validate.check_initial_state(arrays)

    try:
        with Sandbox(bundle, inputs=None, scratch=scratch, limits=Limits(wall_seconds=600, call_seconds=600),
                     mode=mode, forbidden=[p.resolve() for p in forbidden], log=job.path / "sandbox.log") as box:
            _, arrays = box.call("init", {"seed": seed}, expect=check)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [arrays[f"p{i}"] for i in range(len(arrays))]


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
    init = str(cfg.get("init-model", ""))
    weights = Job(Path(init)).load_model() if init else initial_weights(
        bundle.path, job, int(cfg.get("seed", 0)), forbidden=[Path(str(cfg["registry"])), job.path.parent])
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
    if cfg.get("secagg") and not evaluate_only:
        aggregated = sum(1 for r in job.rounds() if r["phase"] == "fit")
        if aggregated < rounds:
            # SecAggPlusWorkflow returns quietly when too few nodes answer a stage: the round's model never moved
            raise RuntimeError(f"secure aggregation halted: {aggregated} of {rounds} rounds aggregated (fewer "
                               "nodes answered than the reconstruction threshold; see the nodes' refusals)")
    if not evaluate_only:
        final = legacy.state.array_records.get("parameters")
        if final is not None:
            job.save_model([a.numpy() for a in final.values()])

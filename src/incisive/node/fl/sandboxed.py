"""One job's bundle code at this node, caged: declared inputs in, declared outputs out (issue 15).

:class:`BundleJob` is the trusted side of every bundle entry point at a node (train, evaluate, infer):

1. refuses when no sandbox can start here and the node's policy has not set ``[sandbox] mode = "off"``;
2. writes the manifest's declared inputs into a fresh 0700 input directory (:mod:`incisive.node.fl.materialise`),
   keeping the map back to pseudonyms and UIDs in this process;
3. starts one sandbox worker (:class:`incisive.federated.sandbox.Sandbox`) for the whole job, which imports the
   approved bundle copy and keeps the data it loaded across rounds;
4. checks every reply before use: parameters must have exactly the names, shapes and dtypes of the parameters
   sent (or of the model's own initial state; a fit may answer a float64 model in float32, which is widened
   back), all finite; metrics only the declared names, finite numbers;
   inference one finite score in [0, 1] per distinct input item. Anything else fails the job with
   "output rejected: …", written to the node's audit log.

The node directory is passed as ``forbidden``: the sandbox refuses to start if it would be visible inside.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from incisive.common.audit_log import NodeAudit
from incisive.common.logging import get_logger
from incisive.federated.sandbox import Limits, OutputRejected, Sandbox, SandboxError, unavailable, validate
from incisive.federated.sandbox.fl_ops import EVALUATE_ARRAYS, EVALUATE_METRICS, FIT_METRICS, named, params
from incisive.node.fl.data import NodeData
from incisive.node.fl.materialise import InputMap, materialise
from incisive.node.home import Node
from incisive.node.policy import load_policy

log = get_logger("fl.sandbox")
Spec = list[tuple[str, tuple[int, ...], str]]


class SandboxRefused(PermissionError):
    """No sandbox can start here and the operator has not opted out: the job is refused, with the reason."""


def sandbox_settings(node: Node) -> tuple[str, Limits]:
    """(mode, limits) from the node's policy ``[sandbox]`` table."""
    table = load_policy(node.home).sandbox
    return table.mode, table.limits()


def refusal(node: Node) -> str | None:
    """Why bundle jobs are refused at this node (no sandbox can start and the policy did not opt out), or None."""
    mode, _ = sandbox_settings(node)
    reason = unavailable(mode)
    if reason is None:
        return None
    return (f"bundle jobs refused: no sandbox on this node ({reason}); the operator may set [sandbox] mode = "
            "\"off\" in policy.toml (audited)")


def spec_of(weights: list[np.ndarray]) -> Spec:
    return [(f"p{i}", tuple(w.shape), str(w.dtype)) for i, w in enumerate(weights)]


class BundleJob:
    """Inputs materialised once, one sandbox worker, every output checked. Use as a context manager."""

    def __init__(self, node: Node, bundle: Path, manifest: dict[str, Any], job_id: str, ref: str,
                 series: list[str] | None = None) -> None:
        self.node, self.bundle, self.manifest, self.job_id, self.ref = node, bundle, manifest, job_id, ref
        self.series = series
        self._dir: Path | None = None
        self._box: Sandbox | None = None
        self.map: InputMap | None = None
        self._sizes: dict[str, int] = {}

    # ------------------------------------------------------------------ lifetime
    def __enter__(self) -> BundleJob:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        mode, limits = sandbox_settings(self.node)
        reason = refusal(self.node)
        if reason is not None:
            raise SandboxRefused(reason)
        if mode == "off":
            NodeAudit(self.node.home).append("local", "fl.sandbox_off", target=self.ref, details={"job": self.job_id})
        withheld = list(getattr(load_policy(self.node.home), "withheld_fields", []) or [])
        self._dir = Path(tempfile.mkdtemp(prefix="incisive-job-"))
        try:
            test_fraction = float((self.manifest.get("params") or {}).get("test_fraction", 0.25))
            self.map = materialise(NodeData(self.node, test_fraction), self.manifest, self._dir / "in",
                                   series=self.series, withheld=withheld)
            (self._dir / "scratch").mkdir(mode=0o700)
            self._box = Sandbox(self.bundle, inputs=self._dir / "in", scratch=self._dir / "scratch", limits=limits,
                                mode=mode, forbidden=[self.node.home.resolve()],
                                log=self.node.home / "logs" / f"sandbox-{self.job_id}.log")
            self._box.__enter__()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        box, self._box = self._box, None
        if box is not None:
            box.__exit__(None, None, None)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # ------------------------------------------------------------------ calls
    def _call(self, op: str, args: dict[str, Any], arrays: dict[str, np.ndarray] | None = None,
              check: Any = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        assert self._box is not None, "start() first"
        try:
            return self._box.call(op, args, arrays, expect=check)
        except OutputRejected as exc:
            NodeAudit(self.node.home).append("sandbox", "fl.output_rejected", target=self.ref, outcome="denied",
                                             details={"job": self.job_id, "op": op, "reason": str(exc)[:200]})
            log.warning("job %s: %s output rejected", self.job_id, op)
            raise
        except SandboxError:
            log.warning("job %s: bundle %s failed in the sandbox", self.job_id, op)
            raise

    def initial(self, seed: int = 0) -> list[np.ndarray]:
        def check(result: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
            validate.check_initial_state(arrays)

        _, arrays = self._call("init", {"seed": seed}, check=check)
        return params(arrays)

    def size(self, split: str) -> int:
        if split not in self._sizes:
            limit = self._rows_limit(split)

            def check(result: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
                validate.check_metrics(result, ("n",))
                if arrays or not 0 <= int(result["n"]) <= limit:
                    raise OutputRejected(f"output rejected: {split} size out of range")

            result, _ = self._call("size", {"split": split}, check=check)
            self._sizes[split] = int(result["n"])
        return self._sizes[split]

    def _rows_limit(self, split: str) -> int:
        assert self.map is not None
        return max(len(self.map.items), len(self.map.rows)) * 10_000  # images: several items per row

    def fit(self, weights: list[np.ndarray], args: dict[str, Any]) -> tuple[list[np.ndarray], dict[str, Any]]:
        spec = spec_of(weights)

        def check(result: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
            validate.check_metrics(result, FIT_METRICS)
            validate.check_arrays(arrays, spec, narrower_floats=True)
            if int(result.get("n", -1)) != self.size("train"):
                raise OutputRejected("output rejected: fit reported another row count than the job's data")

        result, arrays = self._call("fit", args, named(weights), check=check)
        # what leaves the node has exactly the names, shapes and dtypes the server sent (a float32 reply to a
        # float64 global model, as SecAgg+ sends from round 2, is widened back)
        return [a.astype(dtype, copy=False) for a, (_, _, dtype) in zip(params(arrays), spec, strict=True)], result

    def evaluate(self, weights: list[np.ndarray]) -> dict[str, Any]:
        def check(result: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
            validate.check_metrics(result, EVALUATE_METRICS)
            if set(arrays) != set(EVALUATE_ARRAYS):
                raise OutputRejected("output rejected: evaluate returns exactly the two score histograms")
            for a in arrays.values():
                if a.ndim != 1 or a.size > 1000 or a.dtype.kind not in "iu" or (a < 0).any() \
                        or int(a.sum()) > int(result.get("n", 0)):
                    raise OutputRejected("output rejected: a score histogram is not a short vector of counts")

        result, arrays = self._call("evaluate", {}, named(weights), check=check)
        return {**result, "neg": [int(v) for v in arrays["neg"]], "pos": [int(v) for v in arrays["pos"]]}

    def infer(self, weights: list[np.ndarray]) -> list[tuple[int, float]]:
        assert self.map is not None
        n_items = len(self.map.items)

        def check(result: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
            if set(arrays) != {"scores", "index"}:
                raise OutputRejected("output rejected: inference returns scores and their item indices only")
            scores, index = arrays["scores"], arrays["index"]
            validate.check_scores(scores, len(index))
            if index.dtype.kind not in "iu" or index.ndim != 1 or len(set(index.tolist())) != len(index) \
                    or (len(index) and (index.min() < 0 or index.max() >= n_items)):
                raise OutputRejected("output rejected: inference item indices are not distinct input items")
            if not all(0.0 <= float(s) <= 1.0 for s in scores):
                raise OutputRejected("output rejected: a score outside [0, 1]")

        _, arrays = self._call("infer", {}, named(weights), check=check)
        return [(int(i), float(s)) for i, s in zip(arrays["index"], arrays["scores"], strict=True)]


"""Node-local inference.

Inference (:func:`infer`) runs at the node with an approved bundle and a trained model, the bundle's code in
the job's sandbox (:class:`incisive.node.fl.sandboxed.BundleJob`), which returns one score per input item index.
Per-item results go to the node catalogue (table ``inference_result``) and, for image models, one DICOM
Comprehensive 3D SR per scored series into the node's store (:mod:`incisive.node.fl.inference_sr`). Nothing is
sent anywhere; :func:`shareable_summary` is the only thing that may leave the node, and only when its policy allows.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from typing import Any

import numpy as np
from highdicom import UID as hd_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from incisive.common.logging import get_logger
from incisive.federated.bundle import RegisteredBundle
from incisive.federated.jobs import now
from incisive.node.catalogue.models import InferenceResult, Instance
from incisive.node.catalogue.writer import now as db_now
from incisive.node.fl.approval import approval, verified_local_bundle
from incisive.node.fl.inference_sr import ModelRef, NotDeidentified, build_sr, read_sources, store_sr
from incisive.node.fl.sandboxed import BundleJob
from incisive.node.home import Node
from incisive.node.policy import load_policy

log = get_logger("inference")
THRESHOLD = 0.5  # unless the bundle's manifest sets params.threshold
HISTOGRAM_BINS = 10


def infer(node: Node, bundle: RegisteredBundle, weights: list[np.ndarray], job_id: str,
          series: list[str] | None = None, write_sr: bool = True) -> dict[str, Any]:
    """Score this node's data with the model ``job_id`` trained (``weights``); results stay at the node.
    Returns a local report whose ``summary`` is what may leave the node (None unless the policy allows).

    ``PermissionError`` when the bundle (this hash) is not approved here or does not declare ``infer``, or no
    sandbox can start here; :class:`incisive.federated.sandbox.SandboxError` when the bundle fails in it or its
    output is rejected.
    """
    m = bundle.manifest
    path = verified_local_bundle(node.home, m.name, m.version, bundle.digest)
    if path is None:
        raise PermissionError(f"bundle {m.ref} is not approved at this node")
    manifest = json.loads((path / "manifest.json").read_text())
    if "infer" not in manifest.get("job_types", []):
        raise PermissionError(f"bundle {m.ref} does not declare the 'infer' job type")
    run_id = secrets.token_hex(8)
    with BundleJob(node, path, manifest, f"infer-{run_id}", m.ref, series=series) as job:
        scored = job.infer(weights)  # (item index, score): the bundle ran caged, the map stayed here
        assert job.map is not None
        items = job.map.items
    threshold = float(manifest.get("params", {}).get("threshold", THRESHOLD))
    created = db_now()
    rows = []
    for index, score in scored:
        pseudonym, series_uid, sop_uid = items[index]
        rows.append(InferenceResult(
            run_id=run_id, model=m.ref, bundle_digest=bundle.digest, job_id=job_id, pseudonym=pseudonym,
            series_uid=series_uid, sop_uid=sop_uid, score=score, positive=score >= threshold,
            threshold=threshold, created_at=created))
    with node.catalogue.session() as s:
        srs = _write_srs(node, s, rows, ModelRef(m.name, m.version, bundle.digest, job_id), threshold) \
            if write_sr else 0
        s.add_all(rows)
    log.info("inference run %s: model=%s items=%d sr=%d", run_id, m.ref, len(rows), srs)
    n_series = len({r.series_uid for r in rows if r.series_uid})
    shared = _shareable(node, m.ref, job_id, run_id, [r.score for r in rows], threshold, n_series)
    return {
        "run": run_id, "model": m.ref, "job": job_id, "bundle_sha256": bundle.digest, "at": now(),
        "items": len(rows), "series": n_series,
        "positive": sum(1 for r in rows if r.positive), "threshold": threshold, "sr_written": srs,
        "stored": {"catalogue": f"table inference_result, run_id {run_id}",
                   "dicom": f"{srs} Comprehensive 3D SR instance(s) in the node store (modality SR)"},
        "shareable": shared is not None, "summary": shared,
    }


def _write_srs(node: Node, s: Session, rows: list[InferenceResult], model: ModelRef, threshold: float) -> int:
    """One SR per scored series, stored durably before ``rows`` (which get its SOP UID) are committed."""
    by_series: dict[str, list[InferenceResult]] = defaultdict(list)
    for r in rows:
        if r.series_uid and r.sop_uid:
            by_series[r.series_uid].append(r)
    if not by_series:
        return 0
    sops = [r.sop_uid for items in by_series.values() for r in items]
    hashes: dict[str, str] = {}
    for chunk in range(0, len(sops), 500):
        q = select(Instance.sop_uid, Instance.object_hash).where(Instance.sop_uid.in_(sops[chunk:chunk + 500]))
        hashes.update((str(uid), str(digest)) for uid, digest in s.execute(q))
    written = 0
    for items in by_series.values():
        items = [r for r in items if r.sop_uid in hashes]
        if not items:
            continue
        try:
            sr = build_sr(read_sources(node, [hashes[str(r.sop_uid)] for r in items]), [r.score for r in items],
                          model, threshold, series_uid=str(hd_uid()), sop_uid=str(hd_uid()))
        except NotDeidentified as exc:
            log.warning("no SR for a scored series: %s", exc)
            continue
        sr_uid = store_sr(node, s, sr)
        for r in items:
            r.sr_sop_uid = sr_uid
        written += 1
    return written


def summarise(scores: list[float], threshold: float, k: int, series: int = 0) -> dict[str, Any]:
    """Counts and a score histogram with disclosure control: a non-zero count below ``k`` is sent as null (an
    empty bin reveals nobody), the total only when every bin is published (so it cannot reveal a suppressed
    bin), the positive count under the same rule for it and the negatives."""
    counts, edges = np.histogram(np.asarray(scores, dtype=float), bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    bins = [int(c) if c == 0 or c >= k else None for c in counts]
    total, positive = len(scores), sum(1 for x in scores if x >= threshold)
    return {
        "items": total if total >= k and all(b is not None for b in bins) else None,
        "series": series if series == 0 or series >= k else None,
        "positive": positive if all(n == 0 or n >= k for n in (positive, total - positive)) else None,
        "threshold": threshold,
        "histogram": {"edges": [round(float(e), 3) for e in edges], "counts": bins},
        "k": k,
    }


def summary_allowed(node: Node, name: str, version: str) -> bool:
    """The node policy's ``share_inference_summary``, or the bundle approved with that flag; never when the
    node does not participate at all."""
    policy = load_policy(node.home)
    entry = approval(node.home, name, version) or {}
    return policy.participate and (policy.share_inference_summary or bool(entry.get("share_inference_summary")))


def shareable_summary(node: Node, run_id: str) -> dict[str, Any] | None:
    """What may go to the platform about one stored inference run, or None when the node policy does not allow
    it (or there is no such run). Counts and a histogram only (suppressed below the node's k): never per-item
    rows, scores or UIDs."""
    with node.catalogue.session() as s:
        rows = s.execute(select(InferenceResult.model, InferenceResult.job_id, InferenceResult.score,
                                InferenceResult.threshold, InferenceResult.series_uid)
                         .where(InferenceResult.run_id == run_id)).all()
    if not rows:
        return None
    return _shareable(node, rows[0].model, rows[0].job_id, run_id, [r.score for r in rows], float(rows[0].threshold),
                      len({r.series_uid for r in rows if r.series_uid}))


def _shareable(node: Node, model: str, job_id: str, run_id: str, scores: list[float], threshold: float,
               series: int) -> dict[str, Any] | None:
    name, _, version = model.partition(":")
    if not summary_allowed(node, name, version):
        return None
    k = load_policy(node.home).min_cell_count
    return {"model": model, "job": job_id, "run": run_id, **summarise(scores, threshold, k, series=series)}

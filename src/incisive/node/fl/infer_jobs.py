"""Inference for the platform at the node's agent: ``infer`` jobs.

The payload names a bundle (name, version, sha256), the training job whose model to use and that model's sha256,
the series to score (default: all) and the requester. The node decides alone:

1. its policy must accept the job type ``infer``, the requester and the project;
2. the bundle's sha256 must be approved here (``incisive node policy approve``); the bundle downloaded from the
   platform must hash to it;
3. the trained weights, downloaded from the platform (signed request; only for an open ``infer`` job of this
   node), must hash to the sha256 the job names;

then :func:`incisive.node.fl.inference.infer` scores the data and writes the results at the node (catalogue rows,
DICOM SRs). The answer holds **only** the run's shareable summary when the node's policy
allows sharing it (counts and a histogram, suppressed below k), else that it was withheld: never rows, scores or
UIDs.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from typing import Any

from incisive.common.logging import get_logger
from incisive.common.protocol import Job, JobType, Result
from incisive.federated.sandbox import SandboxError
from incisive.node.agent_link import LinkError, SignedClient
from incisive.node.fl.supernodes import SHA256, ensure_bundle
from incisive.node.home import Node
from incisive.node.policy import load_policy

log = get_logger("agent.infer")
WITHHELD = "withheld by node policy"
JOB_ID = re.compile(r"[A-Za-z0-9-]{1,32}")
UID = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_SERIES = 1000


def run_infer(node: Node, client: SignedClient, job: Job) -> Result:
    """The agent's answer to an ``infer`` job (never a traceback, never per-item results)."""
    try:
        return _infer(node, client, job.id, job.payload)
    except LinkError as exc:
        return Result.failed(f"download from the platform failed ({exc.status or 'unreachable'})")
    except SandboxError as exc:  # its message is the sandbox's own (kill reason, exception type, output rejected)
        return Result.failed(f"inference failed on the node: {str(exc)[:200]}")
    except Exception as exc:  # the type only: a message could quote data
        log.exception("infer job failed")
        return Result.failed(f"inference failed on the node ({type(exc).__name__})")


def _valid(agent_job: str, payload: dict[str, Any]) -> bool:
    from incisive.federated.bundle import NAME_RE, VERSION_RE

    series = payload.get("series") or []
    return bool(NAME_RE.match(str(payload.get("model", ""))) and VERSION_RE.match(str(payload.get("version", "")))
                and SHA256.fullmatch(str(payload.get("sha256", "")))
                and SHA256.fullmatch(str(payload.get("model_sha256", "")))
                and JOB_ID.fullmatch(str(payload.get("job", ""))) and re.fullmatch(r"[A-Za-z0-9-]{1,64}", agent_job)
                and isinstance(series, list) and len(series) <= MAX_SERIES
                and all(isinstance(u, str) and len(u) <= 64 and UID.fullmatch(u) for u in series))


def _infer(node: Node, client: SignedClient, agent_job: str, payload: dict[str, Any]) -> Result:
    from incisive.federated.bundle import Manifest, RegisteredBundle
    from incisive.federated.jobs import load_weights
    from incisive.node.fl import inference
    from incisive.node.fl.approval import is_approved, local_bundle_path

    if not _valid(agent_job, payload):
        return Result.failed("invalid infer job")
    name, version, digest, source = (str(payload[k]) for k in ("model", "version", "sha256", "job"))
    reason = load_policy(node.home).decide(JobType.INFER.value, str(payload.get("requester", "")),
                                           payload.get("project"))
    if reason is not None:
        return Result.refused(reason)
    if not is_approved(node.home, name, version, digest):
        return Result.refused(f"bundle {name}:{version} ({digest[:12]}) is not approved at this node")
    from incisive.node.fl.sandboxed import refusal

    caged = refusal(node)  # no sandbox, no third-party code (unless the operator opted out)
    if caged is not None:
        return Result.refused(caged)
    problem = ensure_bundle(node, client, name, version, digest)
    if problem is not None:
        return Result.refused(problem)
    from incisive.node.fl.approval import bundle_refusal

    conflict = bundle_refusal(node.home, name, version, digest)  # e.g. a policy tightened since approval
    if conflict is not None:
        return Result.refused(conflict)
    data = client.request("GET", f"/agent/v1/infer/{agent_job}/model", timeout_s=120) or {}
    weights = base64.b64decode(str(data.get("weights", "")))
    if hashlib.sha256(weights).hexdigest() != payload["model_sha256"] or data.get("job") != source:
        return Result.refused("the trained model received does not match its sha256")
    path = local_bundle_path(node.home, name, version)
    bundle = RegisteredBundle(Manifest.from_dict(json.loads((path / "manifest.json").read_text())), digest, path, "")
    try:
        report = inference.infer(node, bundle, load_weights(io.BytesIO(weights)), source,
                               list(payload.get("series") or []) or None)
    except PermissionError as exc:
        return Result.refused(str(exc)[:300])
    log.info("inference for the platform: run %s, %d item(s), summary %s", report["run"], report["items"],
             "shared" if report["shareable"] else "withheld")
    summary = report["summary"]
    if summary is None:
        return Result.ok({"shared": False, "summary": WITHHELD})
    return Result.ok({"shared": True, "summary": summary})

"""What this node shares: ``<node>/policy.toml``, enforced by the node itself on every job.

* ``participate``: take part in federated jobs at all (false = every job is refused);
* ``job_types``: accepted job types (``count``, ``summary``, ``fl-supernode``, ``infer``; all by default). A
  policy file that lists its job types keeps exactly those: add ``infer`` to run inference for the platform;
* ``researchers`` / ``projects``: allowed requesters and projects (empty = any);
* ``min_cell_count``: k; aggregate cells below k are suppressed here, before anything leaves the node. A job may
  ask for a larger k, never a smaller one: the platform cannot override the node's policy;
* ``min_subset``: a ``where`` filter is answered only when the filtered units **and** the rest of the node's
  units each number at least max(min_subset, k) (so a query and its complement cannot be subtracted), and each
  filter value has at least k units on its own (default 10);
* ``overlap_control``: withhold a cell whose unit set differs from one already answered to the same researcher
  or project by 1 to k-1 units (default on; the log of hashed unit sets stays here, see
  :mod:`incisive.node.overlap`);
* ``rounding``: publish counts randomly rounded to this base (0 = exact, the default; 5 as OpenSAFELY does);
* ``require_dp``: answer noisy (ε) counts only (default off: the platform applies ε by default);
* ``share_inference_summary``: whether the summary of a node-local inference run (counts and a score histogram,
  suppressed below k; never per-item rows or UIDs) may go to the platform. Off by default; a bundle approved
  with ``--share-inference-summary`` may share its own summaries even when this is off.
* ``withheld_fields``: clinical fields and labels never given to bundle code; a bundle declaring one (or
  declaring all fields without naming them) cannot be approved, and an approved one is refused at job time;
* ``bundle_modalities``: the modalities whose pixels bundles may declare (empty = any);
* ``require_review``: ``approve`` needs a recorded ``incisive node policy review`` of that sha256 (default off).
* ``[sandbox]``: how bundle code runs (:mod:`incisive.federated.sandbox`): ``mode = "bwrap"`` (default; where
  bubblewrap or user namespaces are unavailable, bundle jobs are refused with the reason) or ``"off"`` (the
  operator's opt-out: a plain subprocess, audited as ``policy.set``, a failing ``node check`` row), and the
  per-job limits (``address_space_mb``, ``cpu_seconds``, ``processes``, ``file_size_mb``, ``open_files``,
  ``wall_seconds``, ``call_seconds``, ``max_output_mb``, ``gpu``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from incisive.common.errors import ConfigError, InputError
from incisive.common.fsio import atomic_write_text, toml_document
from incisive.common.protocol import POLICY_JOB_TYPES as JOB_TYPES
from incisive.federated.sandbox import MODES as SANDBOX_MODES
from incisive.federated.sandbox import Limits

POLICY_FILE = "policy.toml"


class SandboxPolicy(BaseModel):
    """The ``[sandbox]`` table: mode and per-job limits (defaults: :class:`~incisive.federated.sandbox.Limits`)."""

    model_config = ConfigDict(extra="forbid")

    mode: str = "bwrap"
    address_space_mb: int = Field(default=Limits.address_space_mb, ge=256)
    cpu_seconds: int = Field(default=Limits.cpu_seconds, ge=1)
    processes: int = Field(default=Limits.processes, ge=8)
    file_size_mb: int = Field(default=Limits.file_size_mb, ge=1)
    open_files: int = Field(default=Limits.open_files, ge=32)
    wall_seconds: int = Field(default=Limits.wall_seconds, ge=1)
    call_seconds: int = Field(default=Limits.call_seconds, ge=1)
    max_output_mb: int = Field(default=Limits.max_output_mb, ge=1)
    gpu: bool = Limits.gpu

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value not in SANDBOX_MODES:
            raise ValueError(f"sandbox mode must be one of {', '.join(SANDBOX_MODES)}")
        return value

    def limits(self) -> Limits:
        return Limits.from_mapping(self.model_dump())


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    participate: bool = True
    job_types: list[str] = Field(default_factory=lambda: list(JOB_TYPES))
    researchers: list[str] = Field(default_factory=list)
    projects: list[str] = Field(default_factory=list)
    min_cell_count: int = Field(default=5, ge=1, le=1000)
    min_subset: int = Field(default=10, ge=1, le=100_000)
    overlap_control: bool = True
    rounding: int = Field(default=0, ge=0, le=100)
    require_dp: bool = False
    share_inference_summary: bool = False
    withheld_fields: list[str] = Field(default_factory=list)
    bundle_modalities: list[str] = Field(default_factory=list)
    require_review: bool = False
    sandbox: SandboxPolicy = Field(default_factory=SandboxPolicy)

    @field_validator("bundle_modalities")
    @classmethod
    def _modalities(cls, value: list[str]) -> list[str]:
        return [m.strip().upper() for m in value if m.strip()]

    @field_validator("job_types")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(JOB_TYPES))
        if unknown:
            raise ValueError(f"unknown job type(s) {', '.join(unknown)}; known: {', '.join(JOB_TYPES)}")
        return value

    @field_validator("rounding")
    @classmethod
    def _base(cls, value: int) -> int:
        if value == 1:
            raise ValueError("rounding base must be 0 (exact) or at least 2")
        return value

    def check(self, job_type: str, requester: str, project: str | None) -> tuple[str, str] | None:
        """None when the job is allowed, else (rule, reason) it is refused by."""
        if not self.participate:
            return "participate", "node does not participate in federated jobs"
        if job_type not in self.job_types:
            return "job_types", f"job type {job_type!r} not accepted by this node"
        if self.researchers and requester not in self.researchers:
            return "researchers", "requester not allowed by this node's policy"
        if self.projects and (project or "") not in self.projects:
            return "projects", "project not allowed by this node's policy"
        return None

    def decide(self, job_type: str, requester: str, project: str | None) -> str | None:
        """None when the job is allowed, else the reason it is refused."""
        refusal = self.check(job_type, requester, project)
        return None if refusal is None else refusal[1]

    def effective_k(self, requested: int | None) -> int:
        return max(self.min_cell_count, requested or 0)

    def to_toml(self) -> str:
        data = self.model_dump()
        sandbox = data.pop("sandbox")
        return (toml_document(data, "what this node shares; enforced by the node (incisive node policy set)")
                + "\n[sandbox]\n" + toml_document(sandbox))


def load_policy(home: Path) -> Policy:
    path = home / POLICY_FILE
    if not path.exists():
        return Policy()
    try:
        return Policy.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"invalid node policy in {path}: {str(exc).splitlines()[0]}") from None


def save_policy(home: Path, policy: Policy) -> None:
    atomic_write_text(home / POLICY_FILE, policy.to_toml())


def update_policy(home: Path, **changes: Any) -> Policy:
    """Apply the given (non-None) changes and save; InputError on an invalid value."""
    current = load_policy(home).model_dump()
    sandbox_mode = changes.pop("sandbox_mode", None)
    current.update({k: v for k, v in changes.items() if v is not None})
    if sandbox_mode is not None:
        current["sandbox"] = {**current["sandbox"], "mode": sandbox_mode}
    try:
        policy = Policy.model_validate(current)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InputError(f"invalid policy: {problems}") from None
    save_policy(home, policy)
    return policy

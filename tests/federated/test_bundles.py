from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from incisive.common.errors import InputError
from incisive.federated import engine, partition
from incisive.federated.bundle import bundle_digest, parse_ref, read_manifest, shipped_bundle
from incisive.federated.service import Workspace
from incisive.node.fl import approval


def test_digest_changes_with_any_file(tmp_path: Path) -> None:
    src = tmp_path / "b"
    shutil.copytree(shipped_bundle("tabular-risk"), src)
    d1 = bundle_digest(src)
    assert d1 == bundle_digest(shipped_bundle("tabular-risk"))
    (src / "task.py").write_text((src / "task.py").read_text() + "\n# changed\n")
    assert bundle_digest(src) != d1


def test_register_and_mismatch(workspace: Workspace, tmp_path: Path) -> None:
    reg = workspace.registry
    b = reg.register(shipped_bundle("tabular-risk"), "tabular-risk", "1")
    assert b.manifest.job_types == ["train", "evaluate", "infer"]
    assert reg.register(shipped_bundle("tabular-risk")).digest == b.digest  # idempotent
    with pytest.raises(InputError):
        reg.register(shipped_bundle("tabular-risk"), "tabular-risk", "2")
    changed = tmp_path / "changed"
    shutil.copytree(shipped_bundle("tabular-risk"), changed)
    (changed / "task.py").write_text("# other code\n")
    with pytest.raises(InputError, match="another hash"):
        reg.register(changed)
    assert [x.manifest.ref for x in reg.list()] == ["tabular-risk:1"]
    assert parse_ref("tabular-risk:1@JOB") == ("tabular-risk", "1", "JOB")


def test_bad_manifest(tmp_path: Path) -> None:
    (tmp_path / "task.py").write_text("")
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "Bad Name", "version": "1", "kind": "x",
                                                        "job_types": ["train"], "inputs": {}}))
    with pytest.raises(InputError):
        read_manifest(tmp_path)


def test_approval_is_by_hash(sqlite_node, workspace: Workspace) -> None:  # type: ignore[no-untyped-def]
    b = workspace.registry.register(shipped_bundle("tabular-risk"))
    home = sqlite_node.home
    assert not approval.is_approved(home, "tabular-risk", "1", b.digest)
    approval.approve(home, b)
    assert approval.is_approved(home, "tabular-risk", "1", b.digest)
    assert not approval.is_approved(home, "tabular-risk", "1", "0" * 64)
    assert approval.verified_local_bundle(home, "tabular-risk", "1", b.digest) is not None
    # tampering with the node-local copy after approval makes it unusable
    local = approval.local_bundle_path(home, "tabular-risk", "1")
    (local / "task.py").write_text("raise SystemExit\n")
    assert approval.verified_local_bundle(home, "tabular-risk", "1", b.digest) is None
    assert approval.revoke(home, "tabular-risk", "1")


def test_partition_non_iid_is_skewed() -> None:
    _, y, _ = partition.breast_cancer()
    parts = partition.partition(y, 3, "non-iid", seed=1)
    assert sum(len(p) for p in parts) == len(y)
    rates = [float(y[p].mean()) for p in parts]
    assert max(rates) - min(rates) > 0.15
    iid = partition.partition(y, 3, "iid")
    assert max(float(y[p].mean()) for p in iid) - min(float(y[p].mean()) for p in iid) < 0.15


def test_pooled_auc_matches_exact() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    neg, pos = engine.histograms(y, s)
    assert abs(engine.pooled_auc(neg, pos) - engine.auc(y, s)) < 0.01
    assert engine.dice(np.array([1, 1, 0]), np.array([1, 0, 0])) == pytest.approx(2 / 3)

"""``incisive node policy show|set``: stored in the node directory, validated, audited on the node."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from incisive.cli import app
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import ConfigError, InputError
from incisive.node.home import Node
from incisive.node.policy import POLICY_FILE, Policy, load_policy

runner = CliRunner()


def test_defaults(sqlite_node: Node) -> None:
    policy = load_policy(sqlite_node.home)
    assert policy == Policy() and policy.min_cell_count == 5 and policy.participate
    assert policy.decide("count", "anyone", None) is None
    assert policy.effective_k(2) == 5 and policy.effective_k(11) == 11
    # disclosure rules on by default: subset rule, overlap control; exact counts (the platform asks for ε)
    assert policy.min_subset == 10 and policy.overlap_control and policy.rounding == 0 and not policy.require_dp


def test_show_and_set(sqlite_node: Node) -> None:
    home = str(sqlite_node.home)
    r = runner.invoke(app, ["node", "policy", "set", "--home", home, "--k", "10", "--no-participate",
                            "--researchers", "rita,bob", "--projects", "p1", "--job-types", "count", "--json"])
    assert r.exit_code == 0, r.output
    shown = json.loads(runner.invoke(app, ["node", "policy", "show", "--home", home, "--json"]).stdout)
    assert shown == {"participate": False, "job_types": ["count"], "researchers": ["rita", "bob"],
                     "projects": ["p1"], "min_cell_count": 10, "min_subset": 10, "overlap_control": True,
                     "rounding": 0, "require_dp": False, "share_inference_summary": False,
                     "withheld_fields": [], "bundle_modalities": [], "require_review": False,
                     "sandbox": Policy().sandbox.model_dump()}
    assert (sqlite_node.home / POLICY_FILE).exists()
    r = runner.invoke(app, ["node", "policy", "set", "--home", home, "--participate", "--researchers", "",
                            "--share-inference-summary"])
    assert r.exit_code == 0
    policy = load_policy(sqlite_node.home)
    assert policy.participate and policy.researchers == [] and policy.min_cell_count == 10
    assert policy.share_inference_summary
    r = runner.invoke(app, ["node", "policy", "set", "--home", home, "--min-subset", "20", "--rounding", "5",
                            "--require-dp", "--no-overlap-control"])
    assert r.exit_code == 0, r.output
    policy = load_policy(sqlite_node.home)
    assert (policy.min_subset, policy.rounding, policy.require_dp, policy.overlap_control) == (20, 5, True, False)
    actions = [e["action"] for e in NodeAudit(sqlite_node.home).entries()]
    assert actions == ["policy.set", "policy.set", "policy.set"]
    assert "min_cell_count" in runner.invoke(app, ["node", "policy", "show", "--home", home]).stdout


def test_bad_values_refused(sqlite_node: Node) -> None:
    home = str(sqlite_node.home)
    assert isinstance(runner.invoke(app, ["node", "policy", "set", "--home", home, "--k", "0"]).exception, InputError)
    r = runner.invoke(app, ["node", "policy", "set", "--home", home, "--job-types", "train"])
    assert isinstance(r.exception, InputError)
    for bad in (["--rounding", "1"], ["--rounding", "101"], ["--min-subset", "0"]):
        r = runner.invoke(app, ["node", "policy", "set", "--home", home, *bad])
        assert isinstance(r.exception, InputError), bad
    (sqlite_node.home / POLICY_FILE).write_text("min_cell_count = 'five'\n")
    assert isinstance(runner.invoke(app, ["node", "policy", "show", "--home", home]).exception, ConfigError)


def test_decisions() -> None:
    policy = Policy(researchers=["rita"], projects=["p1"], job_types=["count"])
    assert policy.decide("count", "rita", "p1") is None
    assert policy.decide("count", "bob", "p1") is not None
    assert policy.decide("count", "rita", None) is not None
    assert policy.decide("summary", "rita", "p1") is not None
    assert Policy(participate=False).decide("count", "rita", None) is not None
    assert policy.check("count", "bob", "p1") == ("researchers", "requester not allowed by this node's policy")
    assert policy.check("summary", "rita", "p1")[0] == "job_types"  # type: ignore[index]

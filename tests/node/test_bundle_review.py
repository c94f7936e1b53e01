"""Review before approval (issue 15 item 4): ``incisive node policy review NAME:VER [--from-platform] [--json]``
shows what the bundle declares it reads and lets out, its code and the diff against the last version approved
here; ``approve`` records who reviewed; a bundle declaring inputs the node's policy withholds is refused at
approve and, after the policy tightens, at job time."""

from __future__ import annotations

import getpass
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from incisive.cli import app
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import InputError
from incisive.common.exit_codes import ExitCode
from incisive.federated.bundle import Registry, bundle_digest, shipped_bundle
from incisive.federated.task import DECLARED_OUTPUTS
from incisive.node.fl import approval, review
from incisive.node.home import Node
from tests.federated.test_platform_cli import live  # noqa: F401 - the live platform fixture, reused
from tests.test_cli_package import LIGHT

runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    registry = Registry(root / "registry")
    registry.register(shipped_bundle("tabular-risk"))
    registry.register(shipped_bundle("lesion-cnn"))
    return root


def cli(*args: str) -> Any:
    return runner.invoke(app, ["node", "policy", *args])


def make_v2(tmp_path: Path, ws: Path) -> tuple[str, str]:
    """tabular-risk:2 in tmp_path: one changed code line and a changed learning rate; registered. Returns the
    (old, new) code line."""
    src = tmp_path / "tabular_risk_v2"
    shutil.copytree(shipped_bundle("tabular-risk"), src, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["version"], manifest["params"]["lr"] = "2", 0.01
    (src / "manifest.json").write_text(json.dumps(manifest, indent=1))
    lines = (src / "task.py").read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("def build_model"))
    old, new = lines[i + 1], lines[i + 1] + "  # v2: reviewed change"
    lines[i + 1] = new
    (src / "task.py").write_text("\n".join(lines) + "\n")
    Registry(ws / "registry").register(src)
    return old, new


def test_review_shows_manifest_inputs_outputs_code_and_first_version(sqlite_node: Node, ws: Path) -> None:
    r = cli("review", "tabular-risk:1", "--home", str(sqlite_node.home), "--workspace", str(ws))
    assert r.exit_code == 0, r.output
    out = r.output
    code = (shipped_bundle("tabular-risk") / "task.py").read_text()
    for text in ("tabular-risk", "tabular", "train, evaluate, infer", "mean_radius", "worst_fractal_dimension",
                 "label_malignant", "clinical_record.fields", bundle_digest(shipped_bundle("tabular-risk")),
                 "metrics: loss, n (+ dp_epsilon when DP)", "score histograms: neg, pos",
                 "one float score per input item", "the model's parameters", "task.py", "manifest.json",
                 "first version of this bundle at this node"):
        assert text in out, text
    assert all(line.strip() in out for line in code.splitlines() if line.strip()), "the whole code is shown"
    # the review is recorded (who, when, digest) and audited
    done = approval.reviews(sqlite_node.home)
    assert [(d["name"], d["version"], d["sha256"], d["reviewer"]) for d in done] == [
        ("tabular-risk", "1", bundle_digest(shipped_bundle("tabular-risk")), getpass.getuser())]
    audit = [e for e in NodeAudit(sqlite_node.home).entries() if e["action"] == "bundle.review"]
    assert len(audit) == 1 and audit[0]["target"] == "tabular-risk:1"
    assert audit[0]["details"]["sha256"] == done[0]["sha256"]


def test_review_json_shape(sqlite_node: Node, ws: Path) -> None:
    r = cli("review", "lesion-cnn:1", "--home", str(sqlite_node.home), "--workspace", str(ws), "--json",
            "--reviewer", "dpo-anna")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert set(data) == {"name", "version", "kind", "job_types", "params", "description", "sha256", "source",
                         "inputs", "outputs", "policy_conflicts", "files", "previous", "first_version", "diff",
                         "reviewed"}
    assert (data["name"], data["version"], data["kind"], data["source"]) == ("lesion-cnn", "1", "image", "registry")
    assert data["inputs"] == {"clinical_fields": [], "label": "lesion", "modalities": ["CT", "MR"],
                              "catalogue": ["series.modality", "instance.object_hash", "clinical_record.labels"],
                              "store": "de-identified DICOM pixel data"}
    assert set(data["outputs"]) == {"train", "evaluate", "infer"}
    assert data["outputs"]["evaluate"]["metrics"] == list(DECLARED_OUTPUTS["evaluate"].metrics)
    assert data["outputs"]["train"]["parameters"] is True and data["outputs"]["infer"]["scores"] is True
    files = {f["path"]: f for f in data["files"]}
    assert set(files) == {"manifest.json", "task.py"}
    assert files["task.py"]["text"] == (shipped_bundle("lesion-cnn") / "task.py").read_text()
    assert len(files["task.py"]["sha256"]) == 64 and files["task.py"]["size"] > 0
    assert data["previous"] is None and data["first_version"] is True and data["diff"] == []
    assert data["policy_conflicts"] == []
    assert data["reviewed"]["reviewer"] == "dpo-anna" and data["reviewed"]["sha256"] == data["sha256"]


def test_diff_against_the_last_approved_version(sqlite_node: Node, ws: Path, tmp_path: Path) -> None:
    home = str(sqlite_node.home)
    assert cli("approve", "tabular-risk:1", "--home", home, "--workspace", str(ws), "--reviewer", "anna"
               ).exit_code == 0
    old, new = make_v2(tmp_path, ws)
    r = cli("review", "tabular-risk:2", "--home", home, "--workspace", str(ws), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["first_version"] is False
    assert data["previous"]["version"] == "1" and data["previous"]["reviewer"] == "anna"
    diffs = {d["path"]: d for d in data["diff"]}
    assert diffs["task.py"]["status"] == "changed" and diffs["manifest.json"]["status"] == "changed"
    assert f"-{old}" in diffs["task.py"]["lines"] and f"+{new}" in diffs["task.py"]["lines"]
    assert diffs["task.py"]["lines"][:2] == ["--- tabular-risk:1/task.py", "+++ tabular-risk:2/task.py"]
    assert any(line.startswith("+") and "0.01" in line for line in diffs["manifest.json"]["lines"])
    # the same diff in the terminal view, against the version named
    r = cli("review", "tabular-risk:2", "--home", home, "--workspace", str(ws))
    assert r.exit_code == 0 and f"+{new}" in r.output and f"-{old}" in r.output
    assert "changes against tabular-risk:1" in r.output and "first version" not in r.output
    prev = review.previous_approval(sqlite_node.home, "tabular-risk", "2", "0" * 64)
    assert prev is not None and prev["version"] == "1"


def test_terminal_review_is_syntax_highlighted(sqlite_node: Node, ws: Path) -> None:
    bundle = Registry(ws / "registry").get("tabular-risk", "1")
    data = review.build_review(sqlite_node.home, bundle, "registry")
    buf = io.StringIO()
    review.render(data, Console(file=buf, force_terminal=True, width=120, color_system="truecolor"))
    coloured = buf.getvalue()
    assert "\x1b[" in coloured and "build_model" in coloured
    buf = io.StringIO()
    review.render(data, Console(file=buf, force_terminal=False, width=120))
    assert "\x1b[" not in buf.getvalue() and "def build_model" in buf.getvalue()


def test_approve_records_the_reviewer(sqlite_node: Node, ws: Path) -> None:
    home = str(sqlite_node.home)
    assert cli("review", "tabular-risk:1", "--home", home, "--workspace", str(ws), "--reviewer", "anna"
               ).exit_code == 0
    r = cli("approve", "tabular-risk:1", "--home", home, "--workspace", str(ws), "--reviewer", "anna")
    assert r.exit_code == 0, r.output
    entry = approval.approval(sqlite_node.home, "tabular-risk", "1")
    assert entry is not None and entry["reviewer"] == "anna" and entry["reviewed_at"]
    r = cli("approve", "lesion-cnn:1", "--home", home, "--workspace", str(ws))  # default: the OS user; no review
    assert r.exit_code == 0, r.output
    entry = approval.approval(sqlite_node.home, "lesion-cnn", "1")
    assert entry is not None and entry["reviewer"] == getpass.getuser() and entry["reviewed_at"] is None
    audit = [e for e in NodeAudit(sqlite_node.home).entries() if e["action"] == "bundle.approve"]
    assert [(e["target"], e["details"]["reviewer"]) for e in audit] == [("tabular-risk:1", "anna"),
                                                                       ("lesion-cnn:1", getpass.getuser())]
    assert audit[0]["details"]["sha256"] == bundle_digest(shipped_bundle("tabular-risk"))
    listed = json.loads(cli("approvals", "--home", home, "--json").output)
    assert [(a["name"], a["reviewer"]) for a in listed] == [("tabular-risk", "anna"),
                                                            ("lesion-cnn", getpass.getuser())]
    shown = cli("approvals", "--home", home).output
    assert "anna" in shown and "tabular-risk" in shown
    assert "anna" in cli("show", "--home", home).output  # the policy view lists the approvals too
    assert cli("revoke", "lesion-cnn:1", "--home", home).exit_code == 0
    assert [e["action"] for e in NodeAudit(sqlite_node.home).entries()][-1] == "bundle.revoke"


def test_approval_can_require_a_review_of_that_hash(sqlite_node: Node, ws: Path, tmp_path: Path) -> None:
    home = str(sqlite_node.home)
    assert cli("set", "--home", home, "--require-review").exit_code == 0
    r = cli("approve", "tabular-risk:1", "--home", home, "--workspace", str(ws))
    assert isinstance(r.exception, InputError) and "review" in str(r.exception)
    assert approval.approvals(sqlite_node.home) == []
    make_v2(tmp_path, ws)
    assert cli("review", "tabular-risk:2", "--home", home, "--workspace", str(ws)).exit_code == 0
    r = cli("approve", "tabular-risk:1", "--home", home, "--workspace", str(ws))  # reviewing v2 is not v1
    assert isinstance(r.exception, InputError)
    assert cli("review", "tabular-risk:1", "--home", home, "--workspace", str(ws)).exit_code == 0
    assert cli("approve", "tabular-risk:1", "--home", home, "--workspace", str(ws)).exit_code == 0


def test_withheld_field_refused_at_approve(sqlite_node: Node, ws: Path) -> None:
    home = str(sqlite_node.home)
    r = cli("set", "--home", home, "--withheld-fields", "mean_area, hiv_status", "--bundle-modalities", "ct",
            "--json")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert shown["withheld_fields"] == ["mean_area", "hiv_status"] and shown["bundle_modalities"] == ["CT"]
    r = cli("approve", "tabular-risk:1", "--home", home, "--workspace", str(ws))
    assert isinstance(r.exception, InputError) and InputError.exit_code == ExitCode.INVALID
    assert "clinical field 'mean_area'" in str(r.exception) and "withholds" in str(r.exception)
    r = cli("approve", "lesion-cnn:1", "--home", home, "--workspace", str(ws))  # declares CT and MR
    assert isinstance(r.exception, InputError) and "modality 'MR'" in str(r.exception)
    assert approval.approvals(sqlite_node.home) == [] and not (sqlite_node.home / "bundles").exists()
    # the review shows the conflict before anyone tries
    data = json.loads(cli("review", "tabular-risk:1", "--home", home, "--workspace", str(ws), "--json").output)
    assert data["policy_conflicts"] == [
        "declares clinical field 'mean_area', which this node's policy withholds"]
    # the label too
    assert cli("set", "--home", home, "--withheld-fields", "label_malignant", "--bundle-modalities", "").exit_code == 0
    r = cli("approve", "tabular-risk:1", "--home", home, "--workspace", str(ws))
    assert isinstance(r.exception, InputError) and "label 'label_malignant'" in str(r.exception)
    assert cli("approve", "lesion-cnn:1", "--home", home, "--workspace", str(ws)).exit_code == 0  # any modality
    # the real entry point exits with the INVALID code and a clear message on stderr
    done = subprocess.run([sys.executable, "-m", "incisive", "node", "policy", "approve", "tabular-risk:1",
                           "--home", home, "--workspace", str(ws)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == ExitCode.INVALID, done.stderr
    message = " ".join(done.stderr.split())  # the error console wraps at its width
    assert "label 'label_malignant'" in message and "cannot be approved" in message


def test_undeclared_reads_conflict_with_a_restrictive_policy(sqlite_node: Node, tmp_path: Path) -> None:
    from incisive.federated.bundle import Manifest
    from incisive.node.policy import Policy

    every_field = Manifest.from_dict({"name": "x", "version": "1", "kind": "tabular", "job_types": ["train"],
                                      "inputs": {"catalogue": ["clinical_record.fields"], "label": "y"}})
    any_pixels = Manifest.from_dict({"name": "x", "version": "1", "kind": "image", "job_types": ["train"],
                                     "inputs": {"store": "pixels", "label": "y"}})
    assert approval.policy_conflicts(Policy(), every_field) == []
    assert approval.policy_conflicts(Policy(), any_pixels) == []
    assert "without naming them" in approval.policy_conflicts(Policy(withheld_fields=["a"]), every_field)[0]
    assert "without naming" in approval.policy_conflicts(Policy(bundle_modalities=["CT"]), any_pixels)[0]


def test_tightened_policy_refuses_the_job(sqlite_node: Node, ws: Path) -> None:
    home = sqlite_node.home
    bundle = Registry(ws / "registry").get("tabular-risk", "1")
    assert cli("approve", "tabular-risk:1", "--home", str(home), "--workspace", str(ws)).exit_code == 0
    assert approval.bundle_refusal(home, "tabular-risk", "1", bundle.digest) is None
    assert approval.verified_local_bundle(home, "tabular-risk", "1", bundle.digest) is not None
    assert cli("set", "--home", str(home), "--withheld-fields", "worst_area").exit_code == 0
    reason = approval.bundle_refusal(home, "tabular-risk", "1", bundle.digest)
    assert reason is not None and "clinical field 'worst_area'" in reason and "policy" in reason
    assert approval.verified_local_bundle(home, "tabular-risk", "1", bundle.digest) is None  # every job path
    assert approval.is_approved(home, "tabular-risk", "1", bundle.digest)  # still approved: loosening restores it
    assert cli("set", "--home", str(home), "--withheld-fields", "").exit_code == 0
    assert approval.verified_local_bundle(home, "tabular-risk", "1", bundle.digest) is not None
    # the other reasons a job is refused, each named
    assert "not approved" in str(approval.bundle_refusal(home, "tabular-risk", "1", "0" * 64))
    (approval.local_bundle_path(home, "tabular-risk", "1") / "task.py").write_text("raise SystemExit\n")
    assert "missing or changed" in str(approval.bundle_refusal(home, "tabular-risk", "1", bundle.digest))


def test_review_stays_light(sqlite_node: Node, ws: Path) -> None:
    """``node policy review`` (local registry) imports no PyTorch, Flower, platform or FL service."""
    done = subprocess.run([sys.executable, "-c", LIGHT, "node", "policy", "review", "tabular-risk:1", "--home",
                           str(sqlite_node.home), "--workspace", str(ws)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert "HEAVY=\n" in done.stderr, done.stderr
    assert "first version of this bundle at this node" in done.stdout


def test_review_from_platform(live: dict[str, Any], tmp_path: Path,  # noqa: F811 - the fixture imported above
                              monkeypatch: pytest.MonkeyPatch) -> None:
    url, tokens, node = live["url"], live["tokens"], live["node"]
    monkeypatch.delenv("INCISIVE_PLATFORM_URL", raising=False)
    bundle = shipped_bundle("tabular-risk")
    r = runner.invoke(app, ["model", "register", str(bundle), "--name", "tabular-risk", "--version", "1",
                            "--platform", url, "--token", tokens["admin"]])
    assert r.exit_code == 0, r.output
    home = str(node.home)
    assert cli("set", "--home", home, "--require-review").exit_code == 0
    r = cli("review", "tabular-risk:1", "--from-platform", "--home", home, "--json", "--reviewer", "anna")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["source"] == "platform" and data["sha256"] == bundle_digest(bundle)
    assert {f["path"] for f in data["files"]} == {"manifest.json", "task.py"} and data["first_version"] is True
    r = cli("approve", "tabular-risk:1", "--from-platform", "--home", home, "--reviewer", "anna")
    assert r.exit_code == 0, r.output
    entry = approval.approval(node.home, "tabular-risk", "1")
    assert entry is not None and entry["reviewer"] == "anna" and entry["reviewed_at"]
    r = cli("review", "nothing:1", "--from-platform", "--home", home)
    assert r.exit_code != 0


def test_the_light_registry_is_the_workspace_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from incisive.cli.policy import _registry
    from incisive.federated.service import Workspace

    monkeypatch.setenv("INCISIVE_FL_HOME", str(tmp_path / "fl"))
    assert _registry(None).root == Workspace.default(None).registry.root
    assert _registry(tmp_path / "w").root == Workspace.default(tmp_path / "w").registry.root

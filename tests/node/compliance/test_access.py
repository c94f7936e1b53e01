"""The access report: who ran what on the node's data since a date, from the audit chain, grouped per actor, with
counts only (no targets, no details, no PHI); entries before the date left out; a broken chain is reported (and
the command exits 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from incisive.common.audit import GENESIS, make_entry
from incisive.common.audit_log import NodeAudit
from incisive.common.exit_codes import ExitCode
from incisive.node.compliance import subjects
from incisive.node.compliance.access import access_report, parse_since
from incisive.node.home import Node
from tests.node.compliance.test_subjects import REASON, fill, patient_ids, phi

OLD = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def write_old_entries(node: Node) -> None:
    """Two entries from January 2026, chained as NodeAudit would have written them."""
    audit = NodeAudit(node.home)
    audit.dir.mkdir(parents=True, exist_ok=True)
    first = make_entry(0, GENESIS, "local", "policy.set", ts=OLD.isoformat())
    second = make_entry(1, first["hash"], "researcher:old-user", "job.count", target="job-old",
                        ts=(OLD + timedelta(hours=1)).isoformat())
    audit.path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in (first, second)))
    audit.head_path.write_text(json.dumps({"seq": 2, "hash": second["hash"]}))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "incisive", "compliance", *args], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture
def busy(sqlite_node: Node, cohort: Path) -> Node:
    """A node with data and an audit chain: old entries, researchers' jobs, refused tokens, an erase."""
    node = fill(sqlite_node, cohort)
    write_old_entries(node)
    audit = NodeAudit(node.home)
    for number, outcome in enumerate(("ok", "ok", "refused")):
        audit.append("researcher:alice", "job.count", target=f"job-{number}", node=node.settings.node_id,
                     outcome=outcome, details={"query": {"filters": {"cancer_type": "lung"}}})
    audit.append("researcher:bob", "job.summary", target="job-9", outcome="ok")
    audit.append("anonymous", "api.auth", target="10.9.8.7", outcome="refused", details={"failures": 7})
    audit.append("local", "bundle.approve", target="tabular-risk:1")
    subjects.erase(node, patient_ids(cohort)[0], REASON)
    return node


def by_actor(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["actor"]: a for a in report["actors"]}


def test_report_groups_per_actor_with_counts_only(busy: Node, cohort: Path) -> None:
    report = access_report(busy, OLD - timedelta(days=1))
    actors = by_actor(report)
    assert set(actors) == {"local", "researcher:alice", "researcher:bob", "researcher:old-user", "anonymous"}
    assert report["chain"] == {"ok": True, "entries": report["entries"], "problems": 0}
    [alice] = actors["researcher:alice"]["actions"]
    assert alice["action"] == "job.count" and alice["count"] == 3 and alice["targets"] == 3
    assert alice["outcomes"] == {"ok": 2, "refused": 1} and actors["researcher:alice"]["not_ok"] == 1
    local = {r["action"]: r for r in actors["local"]["actions"]}
    assert set(local) == {"policy.set", "bundle.approve", "subject.erase.start", "subject.erase"}
    assert local["subject.erase"]["count"] == 1 and local["subject.erase"]["targets"] == 1
    [refused] = actors["anonymous"]["actions"]
    assert (refused["action"], refused["outcomes"], refused["targets"]) == ("api.auth", {"refused": 1}, 1)
    # no target, detail or PHI in the report
    text = json.dumps(report)
    pid = patient_ids(cohort)[0]
    for secret in ("10.9.8.7", "job-0", "tabular-risk:1", "lung", busy.pseudonymiser.patient(pid), pid,
                   *phi(cohort)):
        assert secret not in text, secret


def test_since_leaves_older_entries_out(busy: Node) -> None:
    report = access_report(busy, parse_since((OLD + timedelta(days=2)).date().isoformat()))
    actors = by_actor(report)
    assert "researcher:old-user" not in actors and "policy.set" not in {r["action"] for r in actors["local"]["actions"]}
    assert report["entries"] == report["chain"]["entries"] - 2
    exact = access_report(busy, parse_since((OLD + timedelta(minutes=30)).isoformat()))
    assert "researcher:old-user" in by_actor(exact) and "policy.set" not in {
        r["action"] for r in by_actor(exact)["local"]["actions"]}


def test_cli_json_and_table(busy: Node) -> None:
    out = cli("access-report", "--since", "2026-01-01", "--home", str(busy.home), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["node"] == busy.settings.node_id and by_actor(data)["researcher:alice"]["entries"] == 3
    table = cli("access-report", "--since", "2026-01-01", "--home", str(busy.home))
    assert table.returncode == 0 and "researcher:alice" in table.stdout and "verified" in table.stdout


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "2999-01-01"])
def test_bad_since_is_refused(sqlite_node: Node, since: str) -> None:
    out = cli("access-report", "--since", since, "--home", str(sqlite_node.home))
    assert out.returncode == ExitCode.INVALID and "--since" in out.stderr


def test_a_broken_chain_is_reported(busy: Node) -> None:
    audit = NodeAudit(busy.home)
    lines = audit.path.read_text().splitlines()
    entry = json.loads(lines[3])
    entry["actor"] = "researcher:mallory"
    lines[3] = json.dumps(entry, sort_keys=True)
    audit.path.write_text("\n".join(lines) + "\n")
    report = access_report(busy, OLD - timedelta(days=1))
    assert report["chain"]["ok"] is False and report["chain"]["problems"] >= 1
    out = cli("access-report", "--since", "2026-01-01", "--home", str(busy.home))
    assert out.returncode == ExitCode.PROBLEMS and "BROKEN" in out.stdout
    out = cli("access-report", "--since", "2026-01-01", "--home", str(busy.home), "--json")
    assert out.returncode == ExitCode.PROBLEMS and json.loads(out.stdout)["chain"]["ok"] is False

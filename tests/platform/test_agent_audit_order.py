"""Audited before answered, proven by order (issue 17 item 1, the node audit log): ``node agent`` runs under
``strace -f`` against a live platform; a researcher's counts reach it as jobs, and for every job the trace must
show the write of its entry to ``<node>/audit/audit.jsonl`` and then that file's ``fsync`` before the first
byte that carries its result to the platform (the exchange request whose body names the job).

The agent used to write job audit entries from a background thread while the result went out (a race: the
trace showed either order). Now the entry is fsync'd before the result is recorded for delivery; with the
``fsync`` removed from ``NodeAudit.append`` this test fails ("answered before its audit entry was fsynced").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from incisive.common.audit_log import NodeAudit
from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.node.agent_link import enrol
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom
from incisive.platform.server import ThreadedServer
from incisive.platform.services import users
from tests.node.net.test_durability_order import SYSCALLS, parse_trace
from tests.platform.conftest import invite, make_platform
from tests.platform.test_integration import AGENT_ENV

pytestmark = pytest.mark.slow
COUNTS = 3


def _child_pid(parent: int, timeout: float = 30) -> int:
    """The traced program's pid (strace's child): signals go to it, not to strace, which would detach."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.05)
    raise AssertionError("strace started no agent process")


class Traced:
    def __init__(self, node: Node, url: str, token: str, trace_file: Path, proc: subprocess.Popen[bytes],
                 agent_pid: int) -> None:
        self.node, self.url, self.token, self.trace_file = node, url, token, trace_file
        self.proc, self.agent_pid = proc, agent_pid

    def stop(self) -> None:
        """SIGTERM to the agent (strace exits with it, the trace complete)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.agent_pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def traced_agent(tmp_path: Path) -> Iterator[Traced]:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace not installed")
    generate_cohort(tmp_path / "cohort", CohortSpec(patients=12, seed=31, size=16, ct_slices=1, mr_slices=1))
    node = Node.init(tmp_path / "node", provider="Audit Hospital")
    import_dicom(node, tmp_path / "cohort" / "dicom", workers=1)
    import_clinical(node, tmp_path / "cohort" / "clinical.csv", drop=["patient_name"])
    platform = make_platform(tmp_path / "platform", query_timeout_s=30.0)
    with platform.db.session() as s:
        token = users.add_user(s, "rita", "researcher", 5.0, "test")[1]
    server = ThreadedServer(platform.settings, platform.db).start()
    enrol(node, server.url, invite(platform, node.settings.provider))
    trace_file = tmp_path / "agent.strace"
    proc = subprocess.Popen([strace, "-f", "-tt", "-yy", "-s", "4096", "-e", f"trace={SYSCALLS}", "-o",
                             str(trace_file), sys.executable, "-m", "incisive", "node", "agent", "--home",
                             str(node.home)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **AGENT_ENV})
    traced = Traced(node, server.url, token, trace_file, proc, _child_pid(proc.pid))
    try:
        yield traced
    finally:
        traced.stop()
        server.stop()
        platform.db.dispose()
        node.catalogue.dispose()


def test_every_answer_leaves_after_its_audit_entry_is_fsynced(traced_agent: Traced) -> None:
    node, url, token = traced_agent.node, traced_agent.url, traced_agent.token
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the agent is online once its first heartbeat arrived
        rows = httpx.get(f"{url}/api/v1/nodes", headers=headers, timeout=10).json()
        if rows and rows[0]["status"] == "online":
            break
        time.sleep(0.2)
    for by in (["modality"], ["sex"], ["cancer_type"])[:COUNTS]:
        r = httpx.post(f"{url}/api/v1/queries/count", json={"by": by}, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["nodes"] == {node.settings.node_id: "ok"}, r.json()
    traced_agent.stop()  # the trace is complete once strace has exited with the agent
    entries = [e for e in NodeAudit(node.home).entries() if e["action"] == "job.count"]
    jobs = [str(e["target"]) for e in entries]
    assert len(jobs) == COUNTS, entries
    trace = parse_trace(traced_agent.trace_file.read_text(errors="replace"))
    audit_path = str(node.home / "audit" / "audit.jsonl")
    port = url.rsplit(":", 1)[1]
    for job in jobs:
        written = [e.t for e in trace.events if e.call == "write" and e.path == audit_path and job in e.data]
        assert written, f"job {job}: no write of its audit entry in the trace"
        synced = [t for t in trace.syncs(audit_path) if t >= written[0]]
        sent = [e.t for e in trace.events if e.call in ("write", "sendto", "sendmsg")
                and e.path.startswith("TCP:[") and e.path.endswith(f"->127.0.0.1:{port}]") and job in e.data]
        assert sent, f"job {job}: its result never left for the platform in the trace"
        assert synced and synced[0] < sent[0], f"job {job}: answered before its audit entry was fsynced"

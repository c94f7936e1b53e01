"""Platform + three node agents as separate processes on localhost, over real HTTP.

Each node has its own catalogue and a different synthetic cohort. A researcher's federated count must equal the
sum of the per-node truths over the cells where a node has at least k (a cell no node may show is not listed at
all; one withheld by overlap control leaves out that node's part), nothing withheld may be derivable from a
margin or the total, and after the platform is killed and restarted the agents reconnect and the next query
succeeds. A node that dies mid-run is reported missing within the query timeout. The platform here answers
exact counts (``require_dp`` off); noisy counts have their own test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import httpx
import pytest

from incisive.common.query_spec import DOMAINS
from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.node import aggregates
from incisive.node.agent_link import enrol
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom
from incisive.platform.home import Platform
from incisive.platform.services import users
from tests.platform.conftest import invite

pytestmark = pytest.mark.slow
K = 5
SINGLE_VALUED = ("sex", "age_band", "cancer_type")  # one value per patient (modality, body part, label: several)
AGENT_ENV = {"INCISIVE_AGENT_HEARTBEAT_S": "0.5", "INCISIVE_AGENT_POLL_WAIT_S": "2",
             "INCISIVE_AGENT_BACKOFF_BASE_S": "0.1", "INCISIVE_AGENT_BACKOFF_MAX_S": "0.5",
             "INCISIVE_AGENT_READINESS_INTERVAL_S": "0"}
PLATFORM_ENV = {"INCISIVE_PLATFORM_REQUIRE_DP": "false",
                "INCISIVE_PLATFORM_QUERY_TIMEOUT_S": "20", "INCISIVE_PLATFORM_LONG_POLL_S": "2",
                "INCISIVE_PLATFORM_REDELIVER_S": "2", "INCISIVE_PLATFORM_NODE_OFFLINE_S": "60"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Cluster:
    platform: Platform
    url: str
    port: int
    token: str
    nodes: list[Node]
    logs: Path
    server: subprocess.Popen[bytes] | None = None
    agents: dict[str, subprocess.Popen[bytes]] | None = None

    def start_platform(self) -> None:
        env = {**os.environ, **PLATFORM_ENV}
        log = (self.logs / "platform.log").open("ab")
        self.server = subprocess.Popen([sys.executable, "-m", "incisive", "platform", "serve", "--home",
                                        str(self.platform.home), "--port", str(self.port)],
                                       stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: httpx.get(self.url + "/api/v1/health", timeout=2).status_code == 200, 60, "platform")

    def kill_platform(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait(10)

    def start_agents(self) -> None:
        self.agents = {}
        for node in self.nodes:
            log = (self.logs / f"agent-{node.settings.node_id}.log").open("ab")
            self.agents[node.settings.node_id] = subprocess.Popen(
                [sys.executable, "-m", "incisive", "node", "agent", "--home", str(node.home)],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **AGENT_ENV})

    def count(self, by: list[str], token: str | None = None, **extra: Any) -> dict[str, Any]:
        r = httpx.post(self.url + "/api/v1/queries/count", json={"by": by, **extra},
                       headers={"Authorization": f"Bearer {token or self.token}"}, timeout=60)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def online(self) -> bool:
        rows = httpx.get(self.url + "/api/v1/nodes", headers={"Authorization": f"Bearer {self.token}"},
                         timeout=5).json()
        return len(rows) == len(self.nodes) and all(r["last_heartbeat"] and r["status"] == "online" for r in rows)

    def stop(self) -> None:
        for proc in [*(self.agents or {}).values(), self.server]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*(self.agents or {}).values(), self.server]:
            if proc is not None:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("federation")
    nodes = []
    for i, (patients, seed) in enumerate([(14, 101), (18, 202), (22, 303)]):
        cohort = root / f"cohort{i}"
        generate_cohort(cohort, CohortSpec(patients=patients, seed=seed, size=16, ct_slices=1, mr_slices=1))
        node = Node.init(root / f"node{i}", provider=f"Hospital {'ABC'[i]}")
        import_dicom(node, cohort / "dicom", workers=1)
        import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
        nodes.append(node)
    platform = Platform.init(root / "platform")
    with platform.db.session() as s:
        token = users.add_user(s, "rita", "researcher", 5.0, "test")[1]
    port = free_port()
    c = Cluster(platform, f"http://127.0.0.1:{port}", port, token, nodes, root)
    try:
        c.start_platform()
        for node in nodes:
            enrol(node, c.url, invite(platform, node.settings.provider))
        c.start_agents()
        wait_until(c.online, 60, "three agents online")
        yield c
    finally:
        c.stop()
        for node in nodes:
            node.catalogue.dispose()
        platform.db.dispose()


def truths(nodes: list[Node], by: list[str]) -> list[dict[tuple[str, ...], int]]:
    out = []
    for node in nodes:
        with node.catalogue.session() as s:
            result = aggregates.count(s, by, None, "patients", 1)
        out.append({tuple(c["key"]): c["count"] for c in result["cells"]})
    return out


def check_disclosure(result: dict[str, Any], nodes: list[Node], by: list[str]) -> None:
    per_node = truths(nodes, by)
    cells = {tuple(c["key"]): c["count"] for c in result["cells"]}
    showable = {key for t in per_node for key, n in t.items() if n >= K}
    assert set(cells) <= showable  # a combination no node may show is not even listed
    overlap = "overlap" in result["withheld_by"]
    for key, count in cells.items():
        parts = [t.get(key, 0) for t in per_node if t.get(key, 0) >= K]
        if overlap:  # some node may have left its part out: the count is the sum of some of the parts
            assert count in {sum(c) for r in range(1, len(parts) + 1) for c in combinations(parts, r)}
        else:
            assert count == sum(parts)
    if not overlap:
        assert set(cells) == showable
    hidden = any(0 < n < K for t in per_node for n in t.values())
    if hidden:
        assert result["complete"] is False and "min_cell_count" in result["withheld_by"]
    if overlap:
        return  # a node may have withheld a margin or its total for overlap: the exact checks below do not hold
    # the total and every margin row are the exact sums of the nodes' own figures, and appear exactly where every
    # node may publish its own: at least k units, and what they hold beyond that node's shown cells 0 or >= k
    # (computed here from counts where each patient has one value of every grouping field, so cells are disjoint)
    single = all(name in SINGLE_VALUED for name in by)

    def publishable(n: int, shown: int) -> bool:
        return n >= K and (n - shown == 0 or n - shown >= K)

    totals = [total(node, by) for node in nodes]
    shown_at = [sum(n for n in t.values() if n >= K) for t in per_node]
    if single:
        expected_total = all(publishable(n, shown) for n, shown in zip(totals, shown_at, strict=True))
        assert (result["total"] is not None) == expected_total, "total published where it must not be, or not"
    if result["total"] is not None:
        assert result["total"] == sum(totals)
    for i, name in enumerate(by):
        margins = {row["value"]: row["count"] for row in result["margins"].get(name, [])}
        if not single:  # a patient may sit in several cells: a margin row holds at least its largest shown cell
            for value, count in margins.items():
                assert count >= max((n for key, n in cells.items() if key[i] == value), default=0)
            continue
        # a node's margin row = the units of its table with that value = the sum of all its cells with that value
        own = [{v: sum(n for key, n in t.items() if key[i] == v) for v in {key[i] for key in t}} for t in per_node]
        for value, count in margins.items():
            assert count == sum(t.get(value, 0) for t in own), f"margin {name}={value} of {by}"
        values = {v for t in own for v in t}
        expected = {v for v in values if len(by) > 1 and all(
            publishable(t.get(v, 0), sum(n for key, n in cells_t.items() if key[i] == v and n >= K))
            for t, cells_t in zip(own, per_node, strict=True))}
        assert set(margins) == expected, f"margin rows of {name} in {by}"


def total(node: Node, by: list[str]) -> int:
    with node.catalogue.session() as s:
        return int(aggregates.count(s, by, None, "patients", 1)["total"])


def test_federated_count_matches_node_truths(cluster: Cluster) -> None:
    by = ["modality", "cancer_type"]
    result = cluster.count(by)
    assert set(result["nodes"].values()) == {"ok"}
    check_disclosure(result, cluster.nodes, by)
    assert result["cells"] and all(c["count"] >= K for c in result["cells"])
    assert result["complete"] is False  # the cohorts are small: some cells are withheld


def test_single_field_and_other_fields(cluster: Cluster) -> None:
    totals, margins = 0, 0
    for i, by in enumerate((["sex"], ["age_band"], ["cancer_type"], ["label"], ["body_part", "sex"],
                            ["cancer_type", "sex"], ["sex", "age_band"])):
        with cluster.platform.db.session() as s:  # a researcher each: overlap control compares their own answers
            token = users.add_user(s, f"fields{i}", "researcher", 1.0, "test")[1]
        result = cluster.count(by, token)
        assert set(result["nodes"].values()) == {"ok"}
        check_disclosure(result, cluster.nodes, by)
        assert "overlap" not in result["withheld_by"]
        totals += result["total"] is not None
        margins += sum(len(rows) for rows in result["margins"].values())
    assert totals >= 3 and margins >= 2  # the exact checks of totals and margin rows did run


def test_noisy_count_lists_the_declared_domain(cluster: Cluster) -> None:
    result = cluster.count(["sex"], epsilon=1.0)
    assert set(result["nodes"].values()) == {"ok"} and result["dp"]["epsilon"] == 1.0
    assert [tuple(c["key"]) for c in result["cells"]] == [(v,) for v in sorted(DOMAINS["sex"])]
    assert result["total"] is None and result["margins"] == {}


def test_platform_restart_agents_reconnect(cluster: Cluster) -> None:
    cluster.kill_platform()
    cluster.start_platform()
    result = cluster.count(["cancer_type"])  # jobs wait for the agents to come back
    assert set(result["nodes"].values()) == {"ok"}
    check_disclosure(result, cluster.nodes, ["cancer_type"])
    assert all(proc.poll() is None for proc in (cluster.agents or {}).values())


def test_node_gone_mid_run_is_reported_missing(cluster: Cluster) -> None:
    assert cluster.agents is not None
    gone = cluster.nodes[0].settings.node_id
    cluster.agents[gone].send_signal(signal.SIGKILL)
    cluster.agents[gone].wait(10)
    started = time.monotonic()
    result = cluster.count(["sex"], timeout_s=3)
    assert time.monotonic() - started < 15
    assert result["nodes"][gone] == "missing"
    assert [s for n, s in result["nodes"].items() if n != gone] == ["ok", "ok"]
    check_disclosure(result, cluster.nodes[1:], ["sex"])

"""Federated count latency: platform + 10 node agents on localhost, real HTTP, signed long-poll link.

Each node is a separate agent process with its own SQLite catalogue (copies of one imported synthetic cohort,
each under its own node id and key); the platform is `incisive platform serve` (uvicorn, SQLite). A researcher
sends `count --by modality,cancer_type` over HTTP; the latency is from request to combined, suppressed answer.
There is no external peer for this: the same run also times the count computed directly on one node's catalogue
(no network, no platform) as the reference, and reports federated / local, and the CPU time the platform and the
agents spent per query (the platform is the bottleneck on a 2-core machine). Target: p95 < 200 ms. The machine
is shared: the load average at the end of the run is recorded with the figures. The nodes run their default
disclosure control (overlap control on) and the platform answers exact counts (``require_dp`` off); ``--vary``
cycles over several groupings and filters, so that each node's overlap log grows and is searched.

    python benchmarks/federated_query.py [--quick] [--nodes 10] [--queries 100] [--vary]
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from incisive import __version__
from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.node import aggregates
from incisive.node.agent_link import enrol
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom
from incisive.platform.home import Platform
from incisive.platform.services import nodes, users

BY = ["modality", "cancer_type"]
VARIED: list[dict[str, Any]] = [
    {"by": BY}, {"by": ["cancer_type"]}, {"by": ["sex", "age_band"]}, {"by": ["age_band"], "where": {"sex": "F"}},
    {"by": ["modality"], "where": {"sex": "M"}}, {"by": ["cancer_type", "sex"]},
    {"by": ["modality"], "unit": "studies"}, {"by": ["age_band", "modality"]},
]
AGENT_ENV = {"INCISIVE_AGENT_HEARTBEAT_S": "5", "INCISIVE_AGENT_POLL_WAIT_S": "20",
             "INCISIVE_AGENT_BACKOFF_BASE_S": "0.1", "INCISIVE_AGENT_BACKOFF_MAX_S": "1",
             "INCISIVE_AGENT_READINESS_INTERVAL_S": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def make_nodes(root: Path, count: int, patients: int) -> list[Node]:
    cohort = root / "cohort"
    generate_cohort(cohort, CohortSpec(patients=patients, seed=7, size=16, ct_slices=1, mr_slices=1))
    template = Node.init(root / "template", provider="Template")
    import_dicom(template, cohort / "dicom", workers=1)
    import_clinical(template, cohort / "clinical.csv", drop=["patient_name"])
    template.catalogue.dispose()
    out = []
    for i in range(count):
        home = root / f"node{i:02d}"
        shutil.copytree(template.home, home)
        toml = home / "incisive.toml"
        text = toml.read_text().replace('node_id = "template"', f'node_id = "hospital-{i:02d}"')
        toml.write_text(text.replace('provider = "Template"', f'provider = "Hospital {i:02d}"'))
        out.append(Node.open(home))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer queries (smoke run)")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--patients", type=int, default=40, help="patients per node")
    ap.add_argument("--vary", action="store_true", help="cycle over several groupings and filters")
    ap.add_argument("--https", action="store_true", help="the platform serves HTTPS from its own CA ('platform "
                    "init --ca'); agents pin it at enrolment; the client verifies it")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "federated_query.json")
    args = ap.parse_args()
    queries = 20 if args.quick else args.queries
    root = Path(tempfile.mkdtemp(prefix="incisive-fedq-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        node_list = make_nodes(root, args.nodes, args.patients)
        plat = Platform.init(root / "platform")
        verify: Any = True
        if args.https:
            from incisive.common.fsio import atomic_write_text
            from incisive.common.tls import client_context
            from incisive.platform import pki
            from incisive.platform.settings import PLATFORM_CONFIG

            plat.settings = pki.init_ca(plat.settings, [])
            atomic_write_text(plat.home / PLATFORM_CONFIG, plat.settings.to_toml())
            ca_file = pki.ca_dir(plat.settings) / "ca.pem"
            verify = client_context(ca_file)
        with plat.db.session() as s:
            token = users.add_user(s, "bench", "researcher", 0.0, "bench")[1]
        port = free_port()
        url = f"{'https' if args.https else 'http'}://127.0.0.1:{port}"
        logs = (root / "logs.txt").open("ab")
        procs.append(subprocess.Popen([sys.executable, "-m", "incisive", "platform", "serve", "--home",
                                       str(plat.home), "--port", str(port)], stdout=logs, stderr=logs,
                                      env={**os.environ, "INCISIVE_PLATFORM_REQUIRE_DP": "false"}))
        wait(lambda: httpx.get(url + "/api/v1/health", verify=verify).status_code == 200, 60, "platform")
        for node in node_list:
            with plat.db.session() as s:
                invite = nodes.create_invite(s, node.settings.provider, 600, "bench")["token"]
            enrol(node, url, invite, ca_file=ca_file if args.https else None)
            procs.append(subprocess.Popen([sys.executable, "-m", "incisive", "node", "agent", "--home",
                                           str(node.home)], stdout=logs, stderr=logs,
                                          env={**os.environ, **AGENT_ENV}))
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60, verify=verify) as client:
            wait(lambda: sum(1 for n in client.get("/api/v1/nodes").json() if n["status"] == "online")
                 == args.nodes, 120, "agents online")
            latencies: list[float] = []
            cpu_before = {p.pid: cpu_seconds(p.pid) for p in procs}
            for i in range(queries + 3):
                started = time.perf_counter()
                r = client.post("/api/v1/queries/count", json=VARIED[i % len(VARIED)] if args.vary else {"by": BY})
                elapsed = (time.perf_counter() - started) * 1000
                body = r.json()
                if r.status_code != 200 or set(body["nodes"].values()) != {"ok"}:
                    raise SystemExit(f"query failed: {r.status_code} {str(body)[:300]}")
                if i >= 3:  # warm-up
                    latencies.append(elapsed)
            cpu = {p.pid: (cpu_seconds(p.pid) - cpu_before[p.pid]) * 1000 / (queries + 3) for p in procs}
        local: list[float] = []
        with node_list[0].catalogue.session() as s:
            for _ in range(max(10, queries // 2)):
                started = time.perf_counter()
                aggregates.count(s, BY, None, "patients", 5)
                local.append((time.perf_counter() - started) * 1000)
        p50, p95 = statistics.median(latencies), pct(latencies, 0.95)
        result = {
            "benchmark": "federated_query",
            "description": ("counts cycling over " + "; ".join(json.dumps(q) for q in VARIED) if args.vary
                            else f"count --by {','.join(BY)}") + f" across {args.nodes} node agent processes on "
                           "localhost (real HTTP, Ed25519-signed long-poll), SQLite platform and catalogues, node "
                           "disclosure defaults (overlap control on)" + (", over HTTPS (the platform's own CA, "
                                                                          "pinned by every agent)" if args.https
                                                                          else ""),
            "input": {"nodes": args.nodes, "patients_per_node": args.patients, "queries": queries, "warmup": 3,
                      "varied": args.vary, "https": args.https},
            "software": {"incisive": __version__, "python": pyplatform.python_version()},
            "machine": {"cpus": os.cpu_count(), "platform": pyplatform.platform(),
                        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]},
            "peer": "reference: the same count computed in-process on one node's catalogue (no network)",
            "federated_ms": {"min": min(latencies), "p50": p50, "p95": p95, "max": max(latencies),
                             "runs": [round(v, 2) for v in latencies]},
            "local_ms": {"min": min(local), "p50": statistics.median(local), "runs": [round(v, 3) for v in local]},
            "cpu_ms_per_query": {"platform": round(cpu[procs[0].pid], 1),
                                 "agents_total": round(sum(v for k, v in cpu.items() if k != procs[0].pid), 1)},
            "ratio_p50_federated_over_local": p50 / statistics.median(local),
            "target_p95_ms": 200,
            "target_met": p95 < 200,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k not in ("federated_ms", "local_ms")}
                         | {"federated_p50_ms": round(p50, 1), "federated_p95_ms": round(p95, 1)}, indent=2))
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""C-STORE ingest throughput: dcmtk ``storescu`` of one folder into our node vs into Orthanc, same run.

Our node de-identifies every instance, fsyncs its object and commits its catalogue row before answering
Success; Orthanc (default config, SQLite index, no compression) stores as is. Both sides get
``TCP_NODELAY=1`` (see shared BENCHMARKS.md). Runs alternate after one warm-up of each; result JSON in
``benchmarks/results/ingest.json`` with every run, min/median per side and the throughput ratio ours/Orthanc.

    python benchmarks/ingest.py [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.node.home import Node

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for test scaffolding
from tests.peers.orthanc import Orthanc

ENV = {**os.environ, "TCP_NODELAY": "1"}


def _lines(stream: IO[str], out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def start_node(home: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**ENV, "INCISIVE_ALLOWED_AES": '["STORESCU"]'}
    proc = subprocess.Popen([sys.executable, "-m", "incisive", "node", "serve", "--home", str(home),
                             "--dicom-port", "0", "--http-port", "0", "--host", "127.0.0.1"],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    while (line := lines.get(timeout=120)) is not None:
        if line.startswith("{") and json.loads(line).get("event") == "listening":
            return proc, int(json.loads(line)["dicom_port"])
    raise RuntimeError("node serve did not start")


def storescu(port: int, folder: Path) -> float:
    t0 = time.perf_counter()
    # dcmtk's storescu, never pynetdicom's app of the same name in the venv
    r = subprocess.run(["/usr/bin/storescu", "-aet", "STORESCU", "-aec", "INCISIVE", "+sd", "+r", "127.0.0.1",
                        str(port), str(folder)], capture_output=True, text=True, env=ENV)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"storescu failed: {r.stderr[-500:]}")
    return elapsed


def run_ours(work: Path, folder: Path, i: int) -> float:
    home = work / f"node{i}"
    Node.init(home, provider="Benchmark Hospital").catalogue.dispose()
    proc, port = start_node(home)
    try:
        return storescu(port, folder)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(home, ignore_errors=True)


def run_orthanc(work: Path, folder: Path, i: int) -> tuple[float, str]:
    peer = Orthanc(work / f"orthanc{i}").start()
    try:
        return storescu(peer.dicom_port, folder), peer.version()
    finally:
        peer.stop()
        shutil.rmtree(work / f"orthanc{i}", ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small folder, one run each (smoke)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ingest.json")
    args = ap.parse_args()
    spec = CohortSpec(patients=8, seed=3, size=64, ct_slices=8, mr_slices=6) if args.quick else \
        CohortSpec(patients=50, seed=3, size=128, ct_slices=24, mr_slices=16)
    runs = 1 if args.quick else args.runs
    with tempfile.TemporaryDirectory(prefix="incisive-ingest-") as tmp:
        work = Path(tmp)
        generate_cohort(work / "cohort", spec)
        folder = work / "cohort" / "dicom"
        files = [p for p in folder.rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        ours: list[float] = []
        theirs: list[float] = []
        version = "?"
        run_ours(work, folder, 0)  # warm-up (page cache, imports)
        run_orthanc(work, folder, 0)
        for i in range(1, runs + 1):
            ours.append(run_ours(work, folder, i))
            seconds, version = run_orthanc(work, folder, i)
            theirs.append(seconds)
            print(f"run {i}: incisive {ours[-1]:.2f} s, orthanc {theirs[-1]:.2f} s", flush=True)
    med_ours, med_theirs = statistics.median(ours), statistics.median(theirs)
    result: dict[str, Any] = {
        "benchmark": "ingest",
        "input": {"instances": len(files), "bytes": total, "mean_instance_bytes": total // len(files),
                  "modalities": "CT, MR, MG, US, SC (synthetic cohort)", "transfer_syntax": "explicit VR LE",
                  "sender": "dcmtk storescu +sd +r, one association, TCP_NODELAY=1"},
        "ours": {"what": "incisive node serve: de-identify, fsync object (file + directory), commit SQLite row "
                         "(WAL, synchronous=NORMAL), then Success",
                 "seconds": ours, "min": min(ours), "median": med_ours,
                 "instances_per_s": len(files) / med_ours},
        "peer": {"what": "Orthanc default config (SyncStorageArea true), SQLite index, StorageCompression false",
                 "version": version,
                 "seconds": theirs, "min": min(theirs), "median": med_theirs,
                 "instances_per_s": len(files) / med_theirs},
        "ratio_throughput_ours_over_peer": med_theirs / med_ours,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_at_end": os.getloadavg()},
        "quick": args.quick,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("input", "ratio_throughput_ours_over_peer")}, indent=2))


if __name__ == "__main__":
    main()

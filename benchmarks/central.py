"""Central Node ingest, two comparisons in one run.

1. **Encryption at rest.** The same de-identified folder imported, as a whole ``incisive node import`` process,
   into a Central Node tenant (verify door, every object sealed with the tenant's AES-256-GCM key) and into a plain
   node with the same verify door and no encryption. The only difference is the sealing: target ≤ 10 % cost.
2. **Upload vs a PACS push.** ``incisive upload run`` of the identified cohort (de-identified at the provider,
   STOW-RS batches to ``incisive central serve``, sealed there) against dcmtk ``storescu`` of the same folder into
   Orthanc (stored as is), each a whole process, ``TCP_NODELAY=1`` for both DIMSE peers.

Runs alternate after one warm-up of each (the imports: twice as many runs, which side goes first alternating);
result JSON in ``benchmarks/results/central.json`` with every run,
min/median per side and the ratios.

    python benchmarks/central.py [--quick] [--runs N]
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

from incisive.central.home import Central
from incisive.central.tenants import add_tenant
from incisive.common.fsio import atomic_write_text
from incisive.common.settings import CONFIG_NAME
from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.node.home import Node
from incisive.node.ingest.dicom_import import import_dicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for test scaffolding
from tests.peers.orthanc import Orthanc

ENV = {**os.environ, "TCP_NODELAY": "1"}
INCISIVE = [sys.executable, "-m", "incisive"]


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {(r.stderr or r.stdout)[-800:]}")
    return elapsed


def deidentified_folder(work: Path, cohort: Path) -> Path:
    """The cohort de-identified once by a node; its stored objects are the folder both sides import."""
    node = Node.init(work / "deid-node", provider="Benchmark Hospital")
    import_dicom(node, cohort, workers=0)
    out = work / "deid"
    out.mkdir()
    for i, path in enumerate(sorted(node.store.iter_digests())):
        shutil.copyfile(node.store.path(path), out / f"{i:05d}.dcm")
    node.catalogue.dispose()
    return out


def plain_node(work: Path, i: int) -> Path:
    node = Node.init(work / f"plain{i}", provider="Benchmark Hospital")
    node.catalogue.dispose()
    settings = node.settings.model_copy(update={"door": "verify"})
    atomic_write_text(node.home / CONFIG_NAME, settings.to_toml())
    return node.home


def tenant_node(central: Central, i: int) -> Path:
    record, _ = add_tenant(central, f"Benchmark Tenant {i}", "DE", "it@example.org")
    home = central.tenant_node(record.id).home
    central.forget_node(record.id)
    return home


def import_run(home: Path, folder: Path) -> float:
    return _timed([*INCISIVE, "node", "import", str(folder), "--home", str(home), "--json"])


def _lines(stream: IO[str], out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def start_central(directory: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([*INCISIVE, "central", "serve", "--central", str(directory), "--http-port", "0",
                             "--dicom-port", "0", "--host", "127.0.0.1"], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    while (line := lines.get(timeout=120)) is not None:
        if line.startswith("{") and json.loads(line).get("event") == "listening":
            return proc, int(json.loads(line)["http_port"])
    raise RuntimeError("central serve did not start")


def upload_run(work: Path, central: Central, url: str, cohort: Path, i: int) -> float:
    _, token = add_tenant(central, f"Upload Tenant {i}", "DE", "it@example.org")
    uploader = work / f"uploader{i}"
    subprocess.run([*INCISIVE, "upload", "init", str(uploader), "--provider", f"Upload Hospital {i}"], check=True,
                   capture_output=True, env=ENV)
    return _timed([*INCISIVE, "upload", "run", str(cohort), "--to", url, "--token", token, "--uploader",
                   str(uploader), "--json"])


def orthanc_run(work: Path, cohort: Path, i: int) -> tuple[float, str]:
    peer = Orthanc(work / f"orthanc{i}").start()
    try:
        seconds = _timed(["/usr/bin/storescu", "-aet", "STORESCU", "-aec", "ORTHANC", "+sd", "+r", "127.0.0.1",
                          str(peer.dicom_port), str(cohort)])
        return seconds, peer.version()
    finally:
        peer.stop()
        shutil.rmtree(work / f"orthanc{i}", ignore_errors=True)


def _side(what: str, seconds: list[float], n: int, total: int) -> dict[str, Any]:
    med = statistics.median(seconds)
    return {"what": what, "seconds": seconds, "min": min(seconds), "median": med, "instances_per_s": n / med,
            "mb_per_s": total / med / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small cohort, one run each (smoke)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "central.json")
    args = ap.parse_args()
    spec = CohortSpec(patients=6, seed=3, size=64, ct_slices=6, mr_slices=4) if args.quick else \
        CohortSpec(patients=40, seed=3, size=256, ct_slices=20, mr_slices=12)
    runs = 1 if args.quick else args.runs
    with tempfile.TemporaryDirectory(prefix="incisive-central-") as tmp:
        work = Path(tmp)
        generate_cohort(work / "cohort", spec)
        cohort = work / "cohort" / "dicom"
        raw_files = [p for p in cohort.rglob("*") if p.is_file()]
        raw_bytes = sum(p.stat().st_size for p in raw_files)
        folder = deidentified_folder(work, cohort)
        files = list(folder.iterdir())
        total = sum(p.stat().st_size for p in files)
        central = Central.init(work / "central", country="DE", provider="Benchmark GmbH", region="eu-central")

        sealed: list[float] = []
        plain: list[float] = []
        import_run(tenant_node(central, 0), folder)  # warm-up (page cache, imports)
        import_run(plain_node(work, 0), folder)
        for i in range(1, 2 * runs + 1):  # twice the runs (the difference is small), the order alternating
            order = [("sealed", tenant_node(central, i)), ("plain", plain_node(work, i))]
            for side, home in order if i % 2 else order[::-1]:
                (sealed if side == "sealed" else plain).append(import_run(home, folder))
            print(f"import run {i}: encrypted tenant {sealed[-1]:.2f} s, plain node {plain[-1]:.2f} s", flush=True)

        proc, port = start_central(central.dir)
        uploads: list[float] = []
        pushes: list[float] = []
        version = "?"
        try:
            url = f"http://127.0.0.1:{port}"
            upload_run(work, central, url, cohort, 100)  # warm-up
            orthanc_run(work, cohort, 100)
            for i in range(1, runs + 1):
                uploads.append(upload_run(work, central, url, cohort, 100 + i))
                seconds, version = orthanc_run(work, cohort, 100 + i)
                pushes.append(seconds)
                print(f"upload run {i}: incisive upload {uploads[-1]:.2f} s, storescu → Orthanc {pushes[-1]:.2f} s",
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
            central.close()
    enc = _side("incisive node import into a Central Node tenant: verify door, AES-256-GCM seal, fsync, commit",
                sealed, len(files), total)
    pl = _side("incisive node import into a plain node with the same verify door, no encryption", plain,
               len(files), total)
    up = _side("incisive upload run: de-identify at the provider, STOW-RS batches to central serve (verify, seal, "
               "fsync, commit), journal", uploads, len(raw_files), raw_bytes)
    pacs = _side("dcmtk storescu +sd +r → Orthanc (default config, stored as is)", pushes, len(raw_files), raw_bytes)
    pacs["version"] = version
    result: dict[str, Any] = {
        "benchmark": "central",
        "input": {"instances": len(raw_files), "bytes": raw_bytes, "deidentified_bytes": total,
                  "cohort": f"synthetic, {spec.patients} patients, {spec.size}² CT/MR + MG/US/SC"},
        "encryption": {"encrypted": enc, "plain": pl,
                       "cost_fraction": enc["median"] / pl["median"] - 1.0},
        "upload": {"ours": up, "peer": pacs, "ratio_throughput_ours_over_peer": pacs["median"] / up["median"]},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_at_end": os.getloadavg()},
        "quick": args.quick,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"encryption_cost": result["encryption"]["cost_fraction"],
                      "upload_over_storescu_orthanc": result["upload"]["ratio_throughput_ours_over_peer"]}, indent=2))


if __name__ == "__main__":
    main()

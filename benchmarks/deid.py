"""De-identification throughput: incisive vs dicognito on the same generated corpus (same run).

Both sides run as a fresh Python process that reads every file of the corpus, de-identifies it and writes
the result to an output folder (dicognito: ``python -m dicognito -o OUT IN``, see BENCHMARKS.md for why not its
console script). Each side: one warm-up, then N timed runs; we report min/median and the ratio of medians as
files per second (ours / dicognito). A second figure shows our full node import (store + catalogue, both
cores) on the same corpus, for context.

    python benchmarks/deid.py [--quick] [--patients N] [--runs N] [--baseline GIT_REF]

``--baseline REF`` also runs the same script on the code of another commit (a temporary ``git worktree``), its
runs alternating with ours, and reports ours / baseline: a change to the engine is judged in the same run
against the code before it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent
OURS = """
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from incisive.node.ingest.dicom_file import WorkerConfig, init_worker, process_path

def one(job):
    i, path, dst = job
    out = process_path(path)
    if out.status != "rejected":
        (dst / f"{i:06d}.dcm").write_bytes(out.data)

if __name__ == "__main__":
    src, dst, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    jobs = [(i, p, dst) for i, p in enumerate(sorted(p for p in src.rglob("*") if p.is_file()))]
    config = WorkerConfig(key=bytes(range(32)))
    if workers == 1:
        init_worker(config)
        for job in jobs:
            one(job)
    else:
        with ProcessPoolExecutor(workers, initializer=init_worker, initargs=(config,)) as pool:
            list(pool.map(one, jobs, chunksize=16))
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def side(name: str, make_cmd: object, runs: int, work: Path) -> list[float]:
    times = []
    for i in range(runs + 1):
        out = work / f"{name}-{i}"
        out.mkdir()
        t = timed(make_cmd(out))  # type: ignore[operator]
        shutil.rmtree(out)
        if i:  # first run is the warm-up
            times.append(t)
        print(f"  {name} run {i}{' (warm-up)' if not i else ''}: {t:.2f} s", file=sys.stderr)
    return times


def alternating(sides: dict[str, object], runs: int, work: Path) -> dict[str, list[float]]:
    """Like :func:`side` for several commands, run in turn so a machine's drift hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(runs + 1):
        for name, make_cmd in sides.items():
            out = work / f"{name}-{i}"
            out.mkdir()
            t = timed(make_cmd(out))  # type: ignore[operator]
            shutil.rmtree(out)
            if i:
                times[name].append(t)
            print(f"  {name} run {i}{' (warm-up)' if not i else ''}: {t:.2f} s", file=sys.stderr)
    return times


def baseline_tree(ref: str, work: Path) -> Path:
    """A detached worktree of ``ref``; its ``src`` goes first on PYTHONPATH for the baseline side."""
    tree = work / "baseline"
    subprocess.run(["git", "-C", str(ROOT.parent), "worktree", "add", "--detach", str(tree), ref], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small corpus, 1 run (smoke test)")
    ap.add_argument("--patients", type=int, default=60)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "deid.json")
    ap.add_argument("--baseline", metavar="GIT_REF", help="also time the engine of this commit (same run)")
    args = ap.parse_args()
    patients, runs = (8, 1) if args.quick else (args.patients, args.runs)

    from incisive.demo.synth import CohortSpec, generate_cohort

    work = Path(tempfile.mkdtemp(prefix="bench-deid-"))
    try:
        generate_cohort(work / "corpus", CohortSpec(patients=patients, seed=3, size=128, ct_slices=12, mr_slices=8))
        src = work / "corpus" / "dicom"
        files = sorted(p for p in src.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in files)
        print(f"corpus: {len(files)} files, {size / 1e6:.1f} MB", file=sys.stderr)
        script = work / "ours.py"
        script.write_text(OURS)
        baseline: dict[str, object] = {}
        if args.baseline:
            tree = baseline_tree(args.baseline, work)
            env = f"PYTHONPATH={tree / 'src'}"
            both = alternating({
                "incisive": lambda out: [sys.executable, str(script), str(src), str(out), "1"],
                "baseline": lambda out: ["env", env, sys.executable, str(script), str(src), str(out), "1"],
            }, runs, work)
            ours, before = both["incisive"], both["baseline"]
            commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True,
                                    check=True).stdout.strip()
            # the node import a user runs, as a process: fresh node, start-up included (BENCHMARKS.md)
            def node_import(prefix: str) -> object:
                def cmd(out: Path) -> list[str]:
                    home = out / "node"
                    return ["bash", "-c", f"{prefix} {sys.executable} -m incisive node init {home} --provider B"
                            f" >/dev/null && {prefix} {sys.executable} -m incisive node import {src}"
                            f" --home {home} --json >/dev/null"]
                return cmd

            imports = alternating({"import": node_import(""), "import-baseline": node_import(f"env {env}")},
                                  runs, work)
            baseline = {"ref": args.baseline, "commit": commit, "seconds": before,
                        "median_s": statistics.median(before),
                        "ratio_seconds_ours_over_baseline": statistics.median(ours) / statistics.median(before),
                        "node_import_seconds": imports["import"],
                        "node_import_baseline_seconds": imports["import-baseline"],
                        "node_import_ratio_seconds_ours_over_baseline":
                            statistics.median(imports["import"]) / statistics.median(imports["import-baseline"])}
            subprocess.run(["git", "-C", str(ROOT.parent), "worktree", "remove", "--force", str(tree)], check=False)
        else:
            ours = side("incisive", lambda out: [sys.executable, str(script), str(src), str(out), "1"], runs, work)
        peer = side("dicognito", lambda out: [sys.executable, "-m", "dicognito", "-o", str(out), str(src)], runs, work)
        cores = os.cpu_count() or 1
        ours_all = side(f"incisive-{cores}-workers",
                        lambda out: [sys.executable, str(script), str(src), str(out), str(cores)], runs, work)

        from incisive.node.home import Node
        from incisive.node.ingest.dicom_import import import_dicom

        node = Node.init(work / "node", provider="Bench")
        start = time.perf_counter()
        report = import_dicom(node, src)
        full_import = time.perf_counter() - start

        def fps(ts: list[float]) -> float:
            return len(files) / statistics.median(ts)

        result = {
            "benchmark": "deid",
            "input": {"files": len(files), "bytes": size, "generator": "incisive demo-data (CT/MR/MG/US, 128x128)",
                      "patients": patients},
            "peer": {"name": "dicognito", "version": version("dicognito"),
                     "invocation": "python -m dicognito -o OUT IN"},
            "ours": {"name": "incisive", "version": version("incisive"),
                     "invocation": "process_path per file; 1 process, then one per core"},
            "runs": runs,
            "incisive_seconds": ours,
            "dicognito_seconds": peer,
            "incisive": {"min_s": min(ours), "median_s": statistics.median(ours), "files_per_s": fps(ours)},
            "dicognito": {"min_s": min(peer), "median_s": statistics.median(peer), "files_per_s": fps(peer)},
            "ratio_files_per_s": fps(ours) / fps(peer),
            "incisive_all_cores_seconds": ours_all,
            "incisive_all_cores": {"workers": cores, "min_s": min(ours_all), "median_s": statistics.median(ours_all),
                                   "files_per_s": fps(ours_all)},
            "ratio_all_cores_files_per_s": fps(ours_all) / fps(peer),
            "target_ratio": 3.0,
            "context_full_node_import": {"seconds": full_import, "files_per_s": len(files) / full_import,
                                         "imported": report.counts["imported"],
                                         "quarantined": report.counts["quarantined"],
                                         "note": "walk + de-identify (2 workers) + fsync'd store + catalogue"},
            "machine": {"python": platform.python_version(), "cpus": cores},
        }
        if baseline:
            result["baseline"] = baseline
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        keys = ("incisive", "dicognito", "incisive_all_cores", "ratio_files_per_s", "ratio_all_cores_files_per_s",
                "baseline")
        print(json.dumps({k: result[k] for k in keys if k in result}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

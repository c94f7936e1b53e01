"""Backup throughput: incisive's exact replica vs ``cp -a`` of the same store, incremental run time, restic beside.

Input: a node whose store holds N random objects (32–96 KiB, content-addressed) catalogued in SQLite. Each side
runs once as warm-up and then ``--runs`` times, into a fresh empty target each time (page cache warm for both):

* full replica — ``run_dir`` (catalogue snapshot + copy + syncfs + manifest, in process) vs ``cp -a store/``
  (no fsync) and ``cp -a`` + ``sync -f`` (the same durability as ours); ratio = peer median / our median time
  (= our throughput / theirs; target ≥ 0.8 against plain ``cp -a``);
* incremental — a second run on the unchanged store, in process and as the CLI (``incisive backup run``),
  target < 2 s for 10 000 objects; ``incisive version`` is timed too, to show the CLI's start-up share;
* encrypted vs encrypted, both as whole processes: ``incisive backup run enc`` (an ``--encrypt`` target, a restic
  repository behind our CLI: catalogue snapshot, objects, manifest) against ``restic backup`` of the store alone,
  first run into a fresh repository and an unchanged re-run.

    python benchmarks/backup.py [--quick] [--objects N] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from incisive.node.backup import config
from incisive.node.backup.config import Target
from incisive.node.backup.replica import run_dir
from incisive.node.catalogue.models import Instance, Patient, Series, Study
from incisive.node.home import Node

ROOT = Path(__file__).resolve().parent


def make_node(work: Path, objects: int, seed: int = 5) -> tuple[Node, int]:
    node = Node.init(work / "node", provider="Bench Hospital")
    rng = random.Random(seed)
    rows, total = [], 0
    made: set[Path] = set()
    for i in range(objects):
        data = rng.randbytes(rng.randint(32, 96) * 1024)
        digest = __import__("hashlib").sha256(data).hexdigest()
        path = node.store.path(digest)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)
        total += len(data)
        rows.append({"sop_uid": f"2.25.{i}", "series_id": 1, "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                     "object_hash": digest, "size": len(data), "has_pixels": True, "created_at": datetime.now(UTC)})
    with node.catalogue.session() as s:
        s.execute(insert(Patient).values(id=1, pseudonym="PBENCH"))
        s.execute(insert(Study).values(id=1, study_uid="2.25.1", patient_id=1))
        s.execute(insert(Series).values(id=1, series_uid="2.25.2", study_id=1, modality="CT"))
        s.execute(insert(Instance), rows)
    os.sync()
    return node, total


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def repeat(name: str, runs: int, prepare: Callable[[], None], fn: Callable[[], object]) -> list[float]:
    times = []
    for i in range(runs + 1):
        prepare()
        t = timed(fn)
        print(f"  {name} run {i}{' (warm-up)' if not i else ''}: {t:.3f} s", file=sys.stderr)
        if i:
            times.append(t)
    return times


def interleaved(runs: int, prepare: Callable[[], None], sides: dict[str, Callable[[], object]]) -> dict[
        str, list[float]]:
    """Round-robin over the sides in each round, so drifting load on a shared machine hits all of them."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(runs + 1):
        for name, fn in sides.items():
            prepare()
            t = timed(fn)
            print(f"  {name} run {i}{' (warm-up)' if not i else ''}: {t:.3f} s", file=sys.stderr)
            if i:
                times[name].append(t)
    return times


def stats(times: list[float], size: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"runs_s": times, "min_s": min(times), "median_s": statistics.median(times)}
    if size:
        out["mb_per_s"] = size / 1e6 / statistics.median(times)
    return out


def fresh(path: Path) -> Callable[[], None]:
    def prepare() -> None:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        os.sync()
    return prepare


def run(cmd: list[str], **kw: Any) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 000 objects, 1 run (smoke test)")
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "backup.json")
    args = ap.parse_args()
    objects, runs = (1_000, 1) if args.quick else (args.objects, args.runs)
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    try:
        node, size = make_node(work, objects)
        print(f"store: {objects} objects, {size / 1e6:.1f} MB", file=sys.stderr)
        drive = work / "drive"
        target = Target("bench", "dir", str(drive))
        src = node.store.objects

        full = interleaved(runs, fresh(drive), {
            "incisive full": lambda: run_dir(node, target),
            "cp -a": lambda: run(["cp", "-a", str(src), str(drive / "objects")]),
            "cp -a + sync -f": lambda: (run(["cp", "-a", str(src), str(drive / "objects")]),
                                        run(["sync", "-f", str(drive)])),
        })
        ours, cp, cp_sync = full["incisive full"], full["cp -a"], full["cp -a + sync -f"]

        fresh(drive)()
        run_dir(node, target)
        incr = repeat("incisive incremental", runs, lambda: None, lambda: run_dir(node, target))
        cli = [sys.executable, "-m", "incisive", "backup", "run", "--json", "--home", str(node.home)]
        config.add_target(node.home, "bench", str(drive))
        cli = [*cli[:5], "bench", *cli[5:]]  # the replica target by name (the node has an encrypted one too)
        incr_cli = repeat("incisive incremental (CLI)", runs, lambda: None, lambda: run(cli))
        startup = repeat("incisive version (CLI start-up only)", runs, lambda: None,
                         lambda: run([sys.executable, "-m", "incisive", "version"]))

        restic_result: dict[str, Any] | None = None
        if shutil.which("restic"):
            pw = work / "restic-password"
            pw.write_text("benchmark-only password\n")
            repo = work / "restic-repo"
            env = {**os.environ, "RESTIC_PASSWORD_FILE": str(pw), "RESTIC_REPOSITORY": str(repo),
                   "RESTIC_CACHE_DIR": str(work / "restic-cache")}

            def restic_init() -> None:
                shutil.rmtree(repo, ignore_errors=True)
                shutil.rmtree(work / "restic-cache", ignore_errors=True)
                run(["restic", "init"], env=env)

            backup = ["restic", "backup", "--json", "--host", "bench", "store/objects"]
            r_full = repeat("restic full", runs, restic_init, lambda: run(backup, env=env, cwd=node.home))
            r_incr = repeat("restic incremental", runs, lambda: None, lambda: run(backup, env=env, cwd=node.home))
            # like with like: our encrypted off-site target (``--encrypt``: a restic repository behind the CLI) as
            # a whole process, first run into a fresh repository and an unchanged re-run, against restic alone
            enc_repo = work / "incisive-restic-repo"
            config.add_target(node.home, "enc", f"restic:{enc_repo}", encrypt=True, password_file=pw)
            enc_cli = [sys.executable, "-m", "incisive", "backup", "run", "enc", "--json", "--home", str(node.home)]

            def enc_init() -> None:
                shutil.rmtree(enc_repo, ignore_errors=True)
                run(["restic", "init"], env={**env, "RESTIC_REPOSITORY": str(enc_repo)})

            e_full = repeat("incisive encrypted full (CLI)", runs, enc_init, lambda: run(enc_cli))
            e_incr = repeat("incisive encrypted incremental (CLI)", runs, lambda: None, lambda: run(enc_cli))
            restic_ver = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.split()[1]
            restic_result = {"version": restic_ver, "full": stats(r_full, size), "incremental": stats(r_incr),
                             "incisive_encrypted_full_cli": stats(e_full, size),
                             "incisive_encrypted_incremental_cli": stats(e_incr),
                             "ratio_encrypted_full_restic_vs_incisive": statistics.median(r_full)
                             / statistics.median(e_full),
                             "ratio_encrypted_incremental_restic_vs_incisive": statistics.median(r_incr)
                             / statistics.median(e_incr),
                             "note": "both encrypted, both whole processes; ratio = restic time / our time "
                                     "(> 1: we are faster). The replica (full) is unencrypted and is compared "
                                     "with cp -a only"}

        result = {
            "benchmark": "backup",
            "input": {"objects": objects, "bytes": size, "object_sizes": "32-96 KiB random",
                      "catalogue": "SQLite", "filesystem": "same disk for store and target, page cache warm"},
            "peer": {"name": "cp -a (GNU coreutils)", "version": subprocess.run(
                ["cp", "--version"], capture_output=True, text=True).stdout.splitlines()[0]},
            "ours": {"name": "incisive backup run (run_dir, in process)", "version": version("incisive")},
            "runs": runs,
            "incisive_full": stats(ours, size),
            "cp_a": stats(cp, size),
            "cp_a_sync": stats(cp_sync, size),
            "ratio_full_vs_cp_a": statistics.median(cp) / statistics.median(ours),
            "ratio_full_vs_cp_a_sync": statistics.median(cp_sync) / statistics.median(ours),
            "target_ratio_full_vs_cp_a": 0.8,
            "incisive_incremental": stats(incr),
            "incisive_incremental_cli": stats(incr_cli),
            "cli_startup_incisive_version": stats(startup),
            "target_incremental_s": 2.0,
            "restic": restic_result,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        keys = ("ratio_full_vs_cp_a", "ratio_full_vs_cp_a_sync")
        print(json.dumps({**{k: result[k] for k in keys},
                          "incremental_median_s": result["incisive_incremental"]["median_s"],  # type: ignore[index]
                          "incremental_cli_median_s": result["incisive_incremental_cli"]["median_s"],  # type: ignore[index]
                          "cli_startup_median_s": result["cli_startup_incisive_version"]["median_s"],  # type: ignore[index]
                          "restic": restic_result}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

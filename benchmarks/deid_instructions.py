"""De-identification cost in instructions (valgrind callgrind), this tree against a baseline commit.

Wall-clock timings on a shared 2-core machine swing by ±30 % from run to run; instruction counts do not. For each
side, the same script de-identifies and serialises the same corpus once and three times (``process_bytes``,
the per-file path of folder import, C-STORE and STOW-RS); the difference, halved, is the cost of one pass
without start-up. Reported: instructions per instance for each side and their ratio, plus the one-off start-up.

    python benchmarks/deid_instructions.py --baseline GIT_REF [--files 120]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PASSES = """
import sys
from pathlib import Path
from incisive.node.ingest.dicom_file import WorkerConfig, init_worker, process_bytes
files = [p.read_bytes() for p in sorted(Path(sys.argv[1]).rglob("*")) if p.is_file()][:int(sys.argv[3])]
init_worker(WorkerConfig(key=bytes(range(32))))
for _ in range(int(sys.argv[2])):
    for raw in files:
        process_bytes(raw)
"""


def instructions(script: Path, corpus: Path, passes: int, files: int, pythonpath: str | None, work: Path) -> int:
    out = work / f"cg.{passes}.{'base' if pythonpath else 'ours'}"
    env = ["env", f"PYTHONPATH={pythonpath}"] if pythonpath else []
    run = subprocess.run([*env, "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                          str(script), str(corpus), str(passes), str(files)], capture_output=True, text=True,
                         check=True)
    match = re.search(r"Collected : (\d+)", run.stderr)
    if not match:
        raise SystemExit("callgrind printed no instruction count")
    return int(match.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, metavar="GIT_REF")
    ap.add_argument("--files", type=int, default=120)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "deid_instructions.json")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (Debian package valgrind)")
    from incisive.demo.synth import CohortSpec, generate_cohort

    work = Path(tempfile.mkdtemp(prefix="bench-deid-ir-"))
    tree = work / "baseline"
    try:
        generate_cohort(work / "corpus", CohortSpec(patients=20, seed=3, size=128, ct_slices=12, mr_slices=8))
        script = work / "passes.py"
        script.write_text(PASSES)
        subprocess.run(["git", "-C", str(ROOT.parent), "worktree", "add", "--detach", str(tree), args.baseline],
                       check=True, capture_output=True)
        corpus = work / "corpus" / "dicom"
        sides = {}
        for name, path in (("ours", None), ("baseline", str(tree / "src"))):
            one, three = (instructions(script, corpus, n, args.files, path, work) for n in (1, 3))
            per_pass = (three - one) / 2
            sides[name] = {"instructions_1_pass": one, "instructions_3_passes": three,
                           "per_instance": per_pass / args.files, "startup": one - per_pass}
            print(f"{name}: {sides[name]['per_instance'] / 1e6:.2f} M instructions per instance", file=sys.stderr)
        result = {"benchmark": "deid_instructions", "files": args.files, "corpus": "incisive demo-data, 128x128",
                  "tool": "valgrind --tool=callgrind", "baseline_ref": args.baseline, **sides,
                  "ratio_per_instance_ours_over_baseline":
                      sides["ours"]["per_instance"] / sides["baseline"]["per_instance"]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("ratio_per_instance_ours_over_baseline",)}))
    finally:
        subprocess.run(["git", "-C", str(ROOT.parent), "worktree", "remove", "--force", str(tree)], check=False,
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

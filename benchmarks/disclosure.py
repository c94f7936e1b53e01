"""What disclosure control costs: utility on the demo cohort and federated count latency with overlap control on.

1. **Utility** (in-process, no network): the demo's three hospitals (synthetic cohorts of 12, 25 and 25
   patients, fixed seeds), one researcher running a typical session of grouped counts. For every query, the
   share of the true cells (the combinations that exist at some node) that come back with a number:
   *before* (the rule until issue 13: a node's part ≥ k is published, every existing combination is listed,
   hidden ones as "<k"), *after* with the node defaults (cells below k not listed, subset rules, overlap control
   across the session) and *after, noisy* (ε = 0.5 at each node over the declared domain; a cell counts as
   returned when its noisy sum is shown). Also the share of the true combinations whose **existence** is
   revealed (before: all of them).
2. **Latency**: `benchmarks/federated_query.py`'s deployment (platform + 10 agent processes, real HTTP) with the
   node defaults (overlap control on) and exact counts, queries cycling over several groupings and filters so the
   overlap log grows and is searched. Target p95 < 200 ms.

    python benchmarks/disclosure.py [--quick] [--skip-latency]
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from incisive import __version__
from incisive.common.protocol import check_count
from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.node import aggregates
from incisive.node.agent import run_job
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical
from incisive.node.ingest.dicom_import import import_dicom
from incisive.node.overlap import OverlapLog
from incisive.platform.services.disclosure import combine_counts

K = 5
SESSION: list[dict[str, Any]] = [  # a typical researcher's first questions
    {"by": ["cancer_type"]},
    {"by": ["modality"]},
    {"by": ["modality", "cancer_type"]},
    {"by": ["sex", "age_band"]},
    {"by": ["cancer_type", "sex"]},
    {"by": ["modality"], "unit": "studies"},
    {"by": ["age_band"], "where": {"sex": "F"}},
    {"by": ["cancer_type"], "where": {"modality": "CT"}},
]
DEMO = [(12, 101), (25, 202), (25, 303)]  # the demo's hospitals A, B, C (fixed seeds here)


def demo_nodes(root: Path) -> list[Node]:
    out = []
    for i, (patients, seed) in enumerate(DEMO):
        cohort = root / f"cohort{i}"
        generate_cohort(cohort, CohortSpec(patients=patients, seed=seed, size=16, ct_slices=1, mr_slices=1))
        node = Node.init(root / f"node{i}", provider=f"Hospital {'ABC'[i]}")
        import_dicom(node, cohort / "dicom", workers=1)
        import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])
        out.append(node)
    return out


def truth(node: Node, query: dict[str, Any]) -> dict[tuple[str, ...], int]:
    with node.catalogue.session() as s:
        result = aggregates.count(s, query["by"], query.get("where"), query.get("unit", "patients"), 1)
    return {tuple(c["key"]): c["count"] for c in result["cells"]}


def ask(node_list: list[Node], logs: list[OverlapLog], query: dict[str, Any], epsilon: float | None) -> Any:
    job_spec = {"by": query["by"], "where": query.get("where") or {}, "unit": query.get("unit", "patients"),
                "k": K, "requester": "rita", "project": "bench", "epsilon": epsilon}
    answers, refused = {}, []
    for i, (node, log) in enumerate(zip(node_list, logs, strict=True)):
        body = run_job(node, {"id": f"j{i}", "type": "count", "payload": job_spec}, log)
        if body["status"] == "ok":
            answers[f"n{i}"] = check_count(body["result"], job_spec)
        else:
            refused.append(body.get("rule"))
    return combine_counts(query["by"], answers), refused


def utility(root: Path) -> dict[str, Any]:
    node_list = demo_nodes(root)
    exact_logs = [OverlapLog(n.home) for n in node_list]
    rows = []
    try:
        for query in SESSION:
            per_node = [truth(n, query) for n in node_list]
            existing = set().union(*per_node)
            before = {key for key in existing if any(t.get(key, 0) >= K for t in per_node)}
            after, refused = ask(node_list, exact_logs, query, None)
            shown = {tuple(c["key"]) for c in after["cells"] if c["count"] is not None}
            row: dict[str, Any] = {
                "query": query, "true_cells": len(existing),
                "before": {"with_number": len(before), "listed": len(existing)},
                "after": {"with_number": len(shown & existing), "listed": len(shown),
                          "refusing_nodes": refused, "withheld_by": after["withheld_by"]},
            }
            if all(f in ("modality", "cancer_type", "sex", "age_band") for f in query["by"]):
                fresh = [OverlapLog(n.home) for n in node_list]  # (noise: overlap control is not applied)
                noisy, _ = ask(node_list, fresh, query, 0.5)
                for log in fresh:
                    log.close()
                noisy_shown = {tuple(c["key"]) for c in noisy["cells"] if c["count"] is not None}
                row["after_noisy"] = {"with_number": len(noisy_shown & existing),
                                      "false_cells": len(noisy_shown - existing), "listed": len(noisy["cells"])}
            rows.append(row)
    finally:
        for log in exact_logs:
            log.close()
        for node in node_list:
            node.catalogue.dispose()

    def share(part: str, what: str) -> float:
        used = [r for r in rows if part in r]
        return round(sum(r[part][what] for r in used) / max(1, sum(r["true_cells"] for r in used)), 3)

    typical = next(r for r in rows if r["query"] == {"by": ["modality", "cancer_type"]})
    return {
        "cohort": {"nodes": len(DEMO), "patients": [p for p, _ in DEMO], "k": K},
        "typical_query": {"by": ["modality", "cancer_type"], "true_cells": typical["true_cells"],
                          "share_with_number_before": round(typical["before"]["with_number"] /
                                                            typical["true_cells"], 3),
                          "share_with_number_after": round(typical["after"]["with_number"] /
                                                           typical["true_cells"], 3),
                          "share_with_number_after_noisy": round(typical["after_noisy"]["with_number"] /
                                                                 typical["true_cells"], 3),
                          "share_existence_revealed_before": 1.0,
                          "share_existence_revealed_after": round(typical["after"]["listed"] /
                                                                  typical["true_cells"], 3)},
        "session": {"share_with_number_before": share("before", "with_number"),
                    "share_with_number_after": share("after", "with_number"),
                    "share_with_number_after_noisy_where_possible": share("after_noisy", "with_number")},
        "queries": rows,
    }


def latency(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parent))
    import federated_query as fq  # the same deployment as the plain latency benchmark

    argv = ["--nodes", str(args.nodes), "--queries", str(20 if args.quick else args.queries), "--vary",
            "--out", str(args.scratch / "latency.json")]
    saved = sys.argv
    sys.argv = ["federated_query.py", *argv]
    try:
        fq.main()
    finally:
        sys.argv = saved
    data: dict[str, Any] = json.loads((args.scratch / "latency.json").read_text())
    return {k: data[k] for k in ("description", "input", "cpu_ms_per_query", "target_p95_ms", "target_met")} | {
        "federated_ms": {k: v for k, v in data["federated_ms"].items() if k != "runs"},
        "load_average_1_5_15": data["machine"]["load_average_1_5_15"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer latency queries (smoke run)")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "disclosure.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="incisive-disclosure-"))
    args.scratch = root
    try:
        started = time.perf_counter()
        result: dict[str, Any] = {
            "benchmark": "disclosure",
            "description": "utility of node-side disclosure control on the demo cohort (3 nodes) and federated "
                           "count latency with overlap control on (10 agent processes)",
            "software": {"incisive": __version__, "python": pyplatform.python_version()},
            "machine": {"cpus": os.cpu_count(), "platform": pyplatform.platform()},
            "utility": utility(root / "utility"),
        }
        result["utility_seconds"] = round(time.perf_counter() - started, 1)
        if not args.skip_latency:
            result["latency_overlap_on"] = latency(args)
        result["machine"]["load_average_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        brief = {"typical_query": result["utility"]["typical_query"], "session": result["utility"]["session"]}
        if "latency_overlap_on" in result:
            brief["latency_ms"] = result["latency_overlap_on"]["federated_ms"]
        print(json.dumps(brief, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()


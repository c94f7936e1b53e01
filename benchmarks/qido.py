"""QIDO-RS study search latency with 1 000 000 instance rows: PostgreSQL vs SQLite, same queries, same run.

Rows are bulk-generated (20 instances per series, 2 series per study, 2.5 studies per patient), then a mix of
study searches (no filter, PatientID, StudyDate range, ModalitiesInStudy, StudyInstanceUID, each with
limit=100) is sent over HTTP to the node's API (uvicorn, viewer token). Reports p50/p95 per backend and per
query in ``benchmarks/results/qido.json``. Needs PostgreSQL on 127.0.0.1:5432 (``INCISIVE_TEST_PG_URL``).

    python benchmarks/qido.py [--quick] [--instances N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from incisive.node.api.tokens import create_token
from incisive.node.catalogue.models import Instance, Patient, Series, Study
from incisive.node.home import Node
from incisive.node.serve import NodeServices

PG_URL = os.environ.get("INCISIVE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PER_SERIES, SERIES_PER_STUDY = 20, 2
CHUNK = 20000


def populate(node: Node, instances: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    n_series = instances // PER_SERIES
    n_studies = n_series // SERIES_PER_STUDY
    n_patients = max(1, int(n_studies / 2.5))
    now = datetime.now(UTC)
    start = date(2005, 1, 1)
    samples: dict[str, Any] = {}
    with node.catalogue.engine.begin() as conn:
        conn.execute(insert(Patient), [{"id": i + 1, "pseudonym": f"P{i:016d}", "sex": rng.choice("FM")}
                                       for i in range(n_patients)])
        rows = [{"id": i + 1, "study_uid": f"2.25.{10**20 + i}", "patient_id": rng.randrange(n_patients) + 1,
                 "study_date": start + timedelta(days=rng.randrange(5800)), "description": "synthetic"}
                for i in range(n_studies)]
        for k in range(0, len(rows), CHUNK):
            conn.execute(insert(Study), rows[k:k + CHUNK])
        samples["study_uid"] = rows[n_studies // 2]["study_uid"]
        samples["patient"] = f"P{rows[n_studies // 3]['patient_id'] - 1:016d}"
        rows = [{"id": i + 1, "series_uid": f"2.25.{2 * 10**20 + i}", "study_id": i // SERIES_PER_STUDY + 1,
                 "modality": rng.choice(("CT", "CT", "MR", "MG", "PT")), "series_number": i % SERIES_PER_STUDY + 1}
                for i in range(n_series)]
        for k in range(0, len(rows), CHUNK):
            conn.execute(insert(Series), rows[k:k + CHUNK])
        for k in range(0, n_series * PER_SERIES, CHUNK):
            conn.execute(insert(Instance), [
                {"id": i + 1, "sop_uid": f"2.25.{3 * 10**20 + i}", "series_id": i // PER_SERIES + 1,
                 "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "object_hash": "0" * 64, "size": 131072,
                 "instance_number": i % PER_SERIES + 1, "has_pixels": True, "created_at": now}
                for i in range(k, min(k + CHUNK, n_series * PER_SERIES))])
        if node.catalogue.dialect == "postgresql":
            for table in ("patient", "study", "series", "instance"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
    # statistics and visibility map as autovacuum leaves them after a bulk load (index-only count scans)
    if node.catalogue.dialect == "postgresql":
        with node.catalogue.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with node.catalogue.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return {"patients": n_patients, "studies": n_studies, "series": n_series,
            "instances": n_series * PER_SERIES, "samples": samples}


def measure(node: Node, samples: dict[str, Any], repeats: int) -> dict[str, Any]:
    queries = {
        "all, limit=100": "limit=100",
        "PatientID": f"PatientID={samples['patient']}",
        "StudyDate range": "StudyDate=20120101-20120331&limit=100",
        "ModalitiesInStudy=MR": "ModalitiesInStudy=MR&limit=100",
        "StudyInstanceUID": f"StudyInstanceUID={samples['study_uid']}",
        "offset=5000": "limit=100&offset=5000",
    }
    services = NodeServices(node, host="127.0.0.1", dicom_port=0, http_port=0, allowed_aes=[])
    bound = services.start(claim=False)
    token = create_token(node, "viewer", "benchmark")
    out: dict[str, Any] = {}
    every: list[float] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{bound.http_port}/dicom-web",
                          headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            for name, qs in queries.items():
                client.get(f"/studies?{qs}").raise_for_status()  # warm-up
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    r = client.get(f"/studies?{qs}")
                    times.append((time.perf_counter() - t0) * 1000)
                    r.raise_for_status()
                every.extend(times)
                out[name] = {"matches": len(r.json()), "p50_ms": statistics.median(times),
                             "p95_ms": _p95(times)}
    finally:
        services.stop()
    return {"queries": out, "p50_ms": statistics.median(every), "p95_ms": _p95(every), "samples": len(every)}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="20 000 rows, few repeats (smoke)")
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "qido.json")
    args = ap.parse_args()
    instances = 20_000 if args.quick else args.instances
    repeats = 5 if args.quick else args.repeats
    result: dict[str, Any] = {"benchmark": "qido", "quick": args.quick, "backends": {}}
    with tempfile.TemporaryDirectory(prefix="incisive-qido-") as tmp:
        name = f"incisive_bench_{secrets.token_hex(4)}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        pg_url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        try:
            for backend, url in (("postgresql", pg_url), ("sqlite", "")):
                node = Node.init(Path(tmp) / backend, provider="Benchmark", catalogue_url=url)
                t0 = time.perf_counter()
                shape = populate(node, instances)
                load_s = time.perf_counter() - t0
                figures = measure(node, shape.pop("samples"), repeats)
                result["backends"][backend] = {"rows": shape, "load_seconds": load_s, **figures}
                print(f"{backend}: p50 {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms", flush=True)
                node.catalogue.dispose()
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    b = result["backends"]
    result["ratio_p95_postgresql_over_sqlite"] = b["postgresql"]["p95_ms"] / b["sqlite"]["p95_ms"]
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()}
    result["target"] = "p95 < 50 ms on PostgreSQL"
    result["target_met"] = b["postgresql"]["p95_ms"] < 50
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "backends"}, indent=2))


if __name__ == "__main__":
    main()

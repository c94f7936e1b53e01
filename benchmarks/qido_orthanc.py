"""QIDO-RS study search against Orthanc's (DICOMweb plugin), on the same instances, same run, both as processes.

The same generated DICOM instances (20 per series, 2 series per study, 2.5 studies per patient, modalities and
study dates drawn at random, tiny pixel data) go by dcmtk ``storescu`` into ``incisive node serve`` and into
Orthanc, each with a PostgreSQL index in its own fresh database (Orthanc: the ``orthanc-postgresql`` index
plugin; ours: the catalogue) unless ``--sqlite`` (both on SQLite). Then both answer the same kinds of study
search over HTTP, *varied*: every repeat draws another patient, study, date window, modality and offset from that
side's own index (ours holds pseudonyms, shifted dates and new UIDs, so each side is asked for values it holds;
the shapes and cardinalities are the same). Reports p50/p95 per query kind and overall, and ours/Orthanc.

Why not the 1 000 000-instance index of ``benchmarks/qido.py``: that index is bulk-inserted rows, which only our
catalogue can take; Orthanc's index is filled only by storing instances, at about 460 per second here (36 min for
1 M instances, ours at about 200 per second: 83 min) on a 2-core machine. ``--instances`` sets the size.

    python benchmarks/qido_orthanc.py [--quick] [--instances N] [--repeats R] [--sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for test scaffolding
from ingest import start_node  # benchmarks/ingest.py: node serve as a process
from qido import _p95 as p95  # benchmarks/qido.py: the same percentile
from tests.peers.orthanc import Orthanc

from incisive.node.api.tokens import create_token
from incisive.node.catalogue.models import Patient, Study
from incisive.node.home import Node

PG_URL = os.environ.get("INCISIVE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PLUGINS = Path("/usr/share/orthanc/plugins")
PER_SERIES, SERIES_PER_STUDY, STUDIES_PER_PATIENT = 20, 2, 2.5
MODALITIES = ("CT", "CT", "MR", "MG", "PT")
STORESCU = "/usr/bin/storescu"  # dcmtk's, not pynetdicom's app of the same name in the venv
ENV = {**os.environ, "TCP_NODELAY": "1"}


def generate(folder: Path, instances: int, seed: int = 7) -> dict[str, int]:
    """``instances`` small CT-class files (16x16 pixels) in patient/study/series folders."""
    rng = random.Random(seed)
    n_series = max(1, instances // PER_SERIES)
    n_studies = max(1, n_series // SERIES_PER_STUDY)
    n_patients = max(1, int(n_studies / STUDIES_PER_PATIENT))
    pixels = np.arange(256, dtype=np.uint16).reshape(16, 16).tobytes()
    studies = [(rng.randrange(n_patients), generate_uid(), date(2005, 1, 1) + timedelta(days=rng.randrange(5800)))
               for _ in range(n_studies)]
    written = 0
    for s, (patient, study_uid, when) in enumerate(studies):
        for k in range(SERIES_PER_STUDY):
            series_uid, modality = generate_uid(), rng.choice(MODALITIES)
            out = folder / f"p{patient:05d}" / f"s{s:06d}" / f"{k}"
            out.mkdir(parents=True, exist_ok=True)
            for i in range(PER_SERIES):
                ds = Dataset()
                ds.file_meta = FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
                ds.PatientID, ds.PatientName = f"BENCH{patient:06d}", f"Patient^{patient:06d}"
                ds.PatientSex, ds.PatientBirthDate = rng.choice("FM"), "19600101"
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
                ds.StudyDate = ds.SeriesDate = when.strftime("%Y%m%d")
                ds.StudyTime, ds.AccessionNumber, ds.StudyID = "101010", f"A{s:08d}", str(s)
                ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, k + 1, i + 1
                ds.StudyDescription = "synthetic benchmark study"
                ds.Rows = ds.Columns = 16
                ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
                ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
                ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
                ds.PixelData = pixels
                ds.save_as(out / f"{i:03d}.dcm", enforce_file_format=True)
                written += 1
    return {"patients": len({p for p, _, _ in studies}), "studies": n_studies,
            "series": n_studies * SERIES_PER_STUDY, "instances": written}


def store(port: int, folder: Path, aec: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([STORESCU, "-aet", "STORESCU", "-aec", aec, "+sd", "+r", "127.0.0.1", str(port),
                        str(folder)], capture_output=True, text=True, env=ENV)
    if r.returncode != 0:
        raise RuntimeError(f"storescu failed: {r.stderr[-500:]}")
    return time.perf_counter() - t0


Picker = Callable[[random.Random], str]


def queries(patients: list[str], studies: list[str]) -> dict[str, Picker]:
    """Query kinds; each call draws new values (from that side's own index)."""
    def window(rng: random.Random) -> str:
        start = date(2005, 1, 1) + timedelta(days=rng.randrange(5700))
        return f"StudyDate={start:%Y%m%d}-{start + timedelta(days=90):%Y%m%d}&limit=100"

    return {
        "all, limit=100": lambda rng: "limit=100",
        "PatientID": lambda rng: f"PatientID={rng.choice(patients)}",
        "StudyDate 3-month window": window,
        "ModalitiesInStudy": lambda rng: f"ModalitiesInStudy={rng.choice(('CT', 'MR', 'MG', 'PT'))}&limit=100",
        "StudyInstanceUID": lambda rng: f"StudyInstanceUID={rng.choice(studies)}",
        "offset": lambda rng: f"limit=100&offset={rng.randrange(max(1, len(studies) - 100))}",
    }


def measure(client: httpx.Client, kinds: dict[str, Picker], repeats: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    out: dict[str, Any] = {}
    every: list[float] = []
    for name, pick in kinds.items():
        client.get(f"studies?{pick(rng)}").raise_for_status()  # warm-up
        times, matches = [], []
        for _ in range(repeats):
            qs = pick(rng)
            t0 = time.perf_counter()
            r = client.get(f"studies?{qs}")
            times.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            matches.append(len(r.json()) if r.content else 0)
        every.extend(times)
        out[name] = {"p50_ms": statistics.median(times), "p95_ms": p95(times),
                     "matches_median": statistics.median(matches)}
    return {"queries": out, "p50_ms": statistics.median(every), "p95_ms": p95(every), "samples": len(every)}


def fresh_database(admin: Any) -> str:
    name = f"incisive_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return name


def run_ours(work: Path, folder: Path, db: str | None, repeats: int) -> dict[str, Any]:
    url = make_url(PG_URL).set(database=db).render_as_string(hide_password=False) if db else ""
    node = Node.init(work / "node", provider="Benchmark Hospital", catalogue_url=url)
    token = create_token(node, "viewer", "benchmark")
    node.catalogue.dispose()
    proc, dicom_port = start_node(node.home)
    try:
        ingest_s = store(dicom_port, folder, "INCISIVE")
        serve = json.loads((node.home / "run" / "serve.json").read_text())
        node = Node.open(node.home)
        with node.catalogue.session() as s:
            patients = list(s.scalars(select(Patient.pseudonym)))
            studies = list(s.scalars(select(Study.study_uid)))
        node.catalogue.dispose()
        with httpx.Client(base_url=f"http://127.0.0.1:{serve['http_port']}/dicom-web/", timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            figures = measure(client, queries(patients, studies), repeats, seed=11)
    finally:
        proc.terminate()
        proc.wait(30)
    return {"what": "incisive node serve (uvicorn), catalogue on " + ("PostgreSQL" if db else "SQLite"),
            "ingest_seconds": ingest_s, "index_studies": len(studies), **figures}


def run_orthanc(work: Path, folder: Path, db: str | None, repeats: int) -> dict[str, Any]:
    plugins = [str(PLUGINS / "libOrthancDicomWeb.so")]
    # the peer at its fastest documented setting: answer finds from the index only, never from the stored files
    extra: dict[str, Any] = {"DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "MainDicomTags",
                                          "SeriesMetadata": "MainDicomTags"},
                             "StorageAccessOnFind": "Never"}
    if db:
        plugins.append(str(PLUGINS / "libOrthancPostgreSQLIndex.so"))
        u = make_url(PG_URL)
        extra["PostgreSQL"] = {"EnableIndex": True, "EnableStorage": False, "Host": u.host or "127.0.0.1",
                               "Port": u.port or 5432, "Database": db, "Username": u.username or "postgres",
                               "Password": u.password or "", "Lock": False}
    peer = Orthanc(work / "orthanc", plugins=plugins, extra=extra).start()
    try:
        ingest_s = store(peer.dicom_port, folder, "ORTHANC")
        patients = [peer.get(f"/patients/{i}")["MainDicomTags"]["PatientID"] for i in peer.get("/patients")]
        studies = [peer.get(f"/studies/{i}")["MainDicomTags"]["StudyInstanceUID"] for i in peer.get("/studies")]
        with httpx.Client(base_url=f"{peer.url}/dicom-web/", timeout=60) as client:
            figures = measure(client, queries(patients, studies), repeats, seed=11)
        version = peer.version()
    finally:
        peer.stop()
    return {"what": f"Orthanc {version} + DICOMweb plugin, index on " + ("PostgreSQL (orthanc-postgresql)"
                                                                          if db else "SQLite"),
            "ingest_seconds": ingest_s, "index_studies": len(studies), **figures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2 000 instances, 5 repeats (smoke)")
    ap.add_argument("--instances", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--sqlite", action="store_true", help="both on SQLite instead of PostgreSQL")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "qido_orthanc.json")
    args = ap.parse_args()
    instances, repeats = (2_000, 5) if args.quick else (args.instances, args.repeats)
    result: dict[str, Any] = {"benchmark": "qido_orthanc", "quick": args.quick,
                              "machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()}}
    admin = None if args.sqlite else create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    databases: list[str] = []
    with tempfile.TemporaryDirectory(prefix="incisive-qido-orthanc-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        result["input"] = generate(work / "dicom", instances)
        result["input"]["generate_seconds"] = time.perf_counter() - t0
        try:
            for side, run in (("peer", run_orthanc), ("ours", run_ours)):
                db = None
                if admin is not None:
                    db = fresh_database(admin)
                    databases.append(db)
                result[side] = run(work, work / "dicom", db, repeats)
                print(f"{side}: p50 {result[side]['p50_ms']:.1f} ms, p95 {result[side]['p95_ms']:.1f} ms", flush=True)
        finally:
            if admin is not None:
                with admin.connect() as conn:
                    for db in databases:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
                admin.dispose()
    result["ratio_p95_ours_over_peer"] = result["ours"]["p95_ms"] / result["peer"]["p95_ms"]
    result["ratio_p50_ours_over_peer"] = result["ours"]["p50_ms"] / result["peer"]["p50_ms"]
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("ours", "peer")}, indent=2))


if __name__ == "__main__":
    main()

"""Interoperability with dcmtk: echoscu, storescu (mixed SOP classes), findscu (study and series)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
from sqlalchemy import func, select

from incisive.node.catalogue import queries
from incisive.node.catalogue.models import Instance, QuarantineItem, Series, Study
from incisive.node.net.scp import DicomServer
from tests.node.net.conftest import NODELAY, need_tool


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, env=NODELAY, timeout=300)


def test_echoscu_allowed_and_unknown_ae(sqlite_scp: DicomServer) -> None:
    echoscu = need_tool("echoscu")
    port = str(sqlite_scp.port)
    assert _run(echoscu, "-aet", "ECHOSCU", "-aec", "INCISIVE", "127.0.0.1", port).returncode == 0
    refused = _run(echoscu, "-aet", "INTRUDER", "-aec", "INCISIVE", "127.0.0.1", port)
    assert refused.returncode != 0
    assert "Rejected" in refused.stderr or "rejected" in refused.stderr.lower()
    # still serving after a rejection
    assert _run(echoscu, "-aet", "ECHOSCU", "-aec", "INCISIVE", "127.0.0.1", port).returncode == 0
    log = (sqlite_scp.node.log_dir / "incisive.log").read_text()
    assert "calling AE 'INTRUDER'" in log


def test_storescu_mixed_folder_then_findscu(scp: DicomServer, cohort: Path, tmp_path: Path) -> None:
    storescu, findscu = need_tool("storescu"), need_tool("findscu")
    files = [p for p in (cohort / "dicom").rglob("*") if p.is_file()]
    modalities = {str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in files}
    assert {"CT", "MR"} <= modalities and len(modalities) >= 3  # mixed SOP classes, some quarantined
    result = _run(storescu, "-aet", "STORESCU", "-aec", "INCISIVE",
                  "+sd", "+r", "127.0.0.1", str(scp.port), str(cohort / "dicom"))
    assert result.returncode == 0, result.stderr[-2000:]
    node = scp.node
    with node.catalogue.session() as s:
        n_inst = s.scalar(select(func.count(Instance.id)))
        n_quar = s.scalar(select(func.count(QuarantineItem.id)))
        study_uids = set(s.scalars(select(Study.study_uid)))
        series_rows = {uid: m for uid, m in s.execute(select(Series.series_uid, Series.modality))}
    assert n_inst + n_quar == len(files) and n_quar >= 1

    # resending stores nothing new
    assert _run(storescu, "-aet", "STORESCU", "-aec", "INCISIVE", "+sd", "+r", "127.0.0.1", str(scp.port),
                str(cohort / "dicom")).returncode == 0
    with node.catalogue.session() as s:
        assert queries.stats(s)["instances"] == n_inst

    out = tmp_path / "study"
    out.mkdir()
    found = _run(findscu, "-aet", "FINDSCU", "-aec", "INCISIVE",
                 "-S", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID", "-k", "PatientID", "-k", "NumberOfStudyRelatedInstances",
                 "127.0.0.1", str(scp.port))
    assert found.returncode == 0, found.stderr[-2000:]
    answers = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert {str(a.StudyInstanceUID) for a in answers} == study_uids
    assert all(str(a.PatientID).startswith("P") for a in answers)  # pseudonyms only

    some_study = sorted(study_uids)[0]
    out = tmp_path / "series"
    out.mkdir()
    found = _run(findscu, "-aet", "FINDSCU", "-aec", "INCISIVE",
                 "-P", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
                 "-k", f"StudyInstanceUID={some_study}", "-k", "SeriesInstanceUID", "-k", "Modality",
                 "-k", "NumberOfSeriesRelatedInstances", "127.0.0.1", str(scp.port))
    assert found.returncode == 0, found.stderr[-2000:]
    answers = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert answers
    for a in answers:
        assert series_rows[str(a.SeriesInstanceUID)] == a.Modality
        assert int(a.NumberOfSeriesRelatedInstances) >= 1

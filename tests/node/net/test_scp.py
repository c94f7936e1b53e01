"""The SCP with pynetdicom as peer: transfer syntaxes, C-FIND matching, and bad input."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from sqlalchemy import func, select

from incisive.node.catalogue.models import Instance
from incisive.node.fsck import fsck
from incisive.node.ingest.dicom_import import import_dicom
from incisive.node.net.scp import DicomServer
from tests.node.net.conftest import PYDICOM_FILES

SYNTAX_FILES = {
    "CT_small.dcm": "1.2.840.10008.1.2.1",
    "MR_small_implicit.dcm": "1.2.840.10008.1.2",
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",
    "JPEG-lossy.dcm": "1.2.840.10008.1.2.4.51",
    "MR_small_jp2klossless.dcm": "1.2.840.10008.1.2.4.90",
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",
    "MR_small_RLE.dcm": "1.2.840.10008.1.2.5",
    "rtplan.dcm": "1.2.840.10008.1.2",
}


@contextmanager
def associate(server: DicomServer, contexts: list[tuple[str, list[str] | None]],
              aet: str = "PYTEST") -> Iterator[Association]:
    ae = AE(ae_title=aet)
    for abstract, syntaxes in contexts:
        if syntaxes:
            ae.add_requested_context(abstract, syntaxes)
        else:
            ae.add_requested_context(abstract)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="INCISIVE")
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release()


def _store(server: DicomServer, ds: Dataset | Path) -> Any:
    meta = pydicom.filereader.read_file_meta_info(ds) if isinstance(ds, Path) else ds.file_meta
    syntax = str(meta.TransferSyntaxUID)
    with associate(server, [(str(meta.MediaStorageSOPClassUID), [syntax])]) as assoc:
        return assoc.send_c_store(ds)


def test_transfer_syntaxes_pass_through(sqlite_scp: DicomServer, tmp_path: Path) -> None:
    for name, syntax in SYNTAX_FILES.items():
        ds = pydicom.dcmread(PYDICOM_FILES / name)
        assert str(ds.file_meta.TransferSyntaxUID) == syntax
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # the MR_small_* share one
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        status = _store(sqlite_scp, path)
        assert status.Status == 0x0000, (name, hex(status.Status))
    with sqlite_scp.node.catalogue.session() as s:
        stored = [ts for (ts,) in s.execute(select(Instance.transfer_syntax))]
    quarantined = {"SC_rgb_jpeg_dcmtk.dcm", "JPEG-lossy.dcm", "JPEG2000.dcm", "image_dfl.dcm"}  # OT/NM/SC
    assert set(stored) <= set(SYNTAX_FILES.values())
    assert "1.2.840.10008.1.2.4.90" in stored and "1.2.840.10008.1.2.5" in stored
    assert len(stored) >= len(SYNTAX_FILES) - len(quarantined)


def _find(server: DicomServer, identifier: Dataset, model: str = "study") -> list[tuple[int, Dataset | None]]:
    sop = StudyRootQueryRetrieveInformationModelFind if model == "study" \
        else PatientRootQueryRetrieveInformationModelFind
    with associate(server, [(sop, None)]) as assoc:
        return [(status.Status if status else -1, ident) for status, ident in assoc.send_c_find(identifier, sop)]


def _ident(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def test_c_find_matching(scp: DicomServer, cohort: Path) -> None:
    import_dicom(scp.node, cohort / "dicom", workers=1)
    studies = [i for st, i in _find(scp, _ident("STUDY", StudyInstanceUID="", StudyDate="", PatientID="",
                                                       ModalitiesInStudy="", AccessionNumber=""))
               if st == 0xFF00]
    assert studies and all(i is not None for i in studies)
    dates = sorted(str(i.StudyDate) for i in studies if i is not None and i.StudyDate)
    low, high = dates[0], dates[len(dates) // 2]
    ranged = [i for st, i in _find(scp, _ident("STUDY", StudyDate=f"{low}-{high}", StudyInstanceUID=""))
              if st == 0xFF00]
    assert len(ranged) == sum(1 for d in dates if low <= d <= high)
    ct = [i for st, i in _find(scp, _ident("STUDY", ModalitiesInStudy="CT", StudyInstanceUID="")) if st == 0xFF00]
    assert 0 < len(ct) < len(studies)
    pid = str(studies[0].PatientID)  # type: ignore[union-attr]
    wild = [i for st, i in _find(scp, _ident("PATIENT", PatientID=pid[:5] + "*", NumberOfPatientRelatedStudies=""),
                                 "patient") if st == 0xFF00]
    assert any(str(i.PatientID) == pid for i in wild if i is not None)
    uids = [str(i.StudyInstanceUID) for i in studies[:2] if i is not None]
    listed = [i for st, i in _find(scp, _ident("SERIES", StudyInstanceUID="\\".join(uids), SeriesInstanceUID="",
                                                      Modality="")) if st == 0xFF00]
    assert listed and {str(i.StudyInstanceUID) for i in listed if i is not None} == set(uids)
    # de-identified attributes never match a value
    assert [st for st, _ in _find(scp, _ident("STUDY", AccessionNumber="A123"))] == [0x0000]


def test_c_find_bad_identifiers(sqlite_scp: DicomServer) -> None:
    statuses = [st for st, _ in _find(sqlite_scp, _ident("STUDY", StudyDate="2020-13-45"))]
    assert statuses == [0xA900]
    statuses = [st for st, _ in _find(sqlite_scp, _ident("PATIENT", PatientID=""))]  # not in Study Root
    assert statuses == [0xA900]
    assert [st for st, _ in _find(sqlite_scp, _ident("STUDY", StudyDate="20200101"))] == [0x0000]


def test_unsupported_context_rejected(sqlite_scp: DicomServer) -> None:
    ae = AE(ae_title="PYTEST")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", sqlite_scp.port, ae_title="INCISIVE")
    assert not assoc.is_established or not assoc.accepted_contexts
    if assoc.is_established:
        assoc.release()
    with associate(sqlite_scp, [(Verification, None)]) as ok:
        assert ok.send_c_echo().Status == 0


def test_oversized_pdu_closes_connection(sqlite_scp: DicomServer) -> None:
    with socket.create_connection(("127.0.0.1", sqlite_scp.port), timeout=30) as sock:
        sock.sendall(struct.pack(">BBL", 0x04, 0, 1 << 30) + b"\x00" * 4096)  # P-DATA claiming 1 GiB
        sock.settimeout(30)
        try:
            reply = sock.recv(4096)
        except ConnectionResetError:
            reply = b""
        # the server closes at once, or sends an A-ABORT (PDU type 0x07) first; it never waits for the 1 GiB
        assert reply == b"" or reply[:1] == b"\x07", reply[:16]
        with pytest.raises((ConnectionError, OSError)):
            for _ in range(64):
                sock.sendall(b"\x00" * 65536)
    with associate(sqlite_scp, [(Verification, None)]) as ok:
        assert ok.send_c_echo().Status == 0


def test_malformed_and_unidentifiable_datasets_refused(sqlite_scp: DicomServer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)  # send file bytes as they are
    good = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    broken = tmp_path / "broken.dcm"
    good.save_as(broken, enforce_file_format=True)
    raw = broken.read_bytes()
    meta_end = 132 + 12 + struct.unpack("<L", raw[140:144])[0]  # (0002,0000) group length
    broken.write_bytes(raw[:meta_end] + b"\x08\x00\x16\x00UI\xff\x7f" + b"garbage")
    status = _store(sqlite_scp, broken)
    assert status.Status == 0xC000
    no_uid = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    del no_uid.StudyInstanceUID
    no_uid.save_as(tmp_path / "no_uid.dcm", enforce_file_format=True)
    status = _store(sqlite_scp, tmp_path / "no_uid.dcm")
    assert status.Status == 0xC000 and "StudyInstanceUID" in str(status.get("ErrorComment", ""))
    with sqlite_scp.node.catalogue.session() as s:
        assert s.scalar(select(func.count(Instance.id))) == 0
    assert list(sqlite_scp.node.store.iter_digests()) == []
    assert _store(sqlite_scp, PYDICOM_FILES / "CT_small.dcm").Status == 0


def test_all_storage_classes_offered(sqlite_scp: DicomServer) -> None:
    ae = AE(ae_title="PYTEST")
    ae.requested_contexts = AllStoragePresentationContexts[:120]
    assoc = ae.associate("127.0.0.1", sqlite_scp.port, ae_title="INCISIVE")
    assert assoc.is_established
    assert len(assoc.accepted_contexts) == 120
    assoc.release()


def test_power_loss_rows_are_recatalogued(sqlite_scp: DicomServer, cohort: Path) -> None:
    """SQLite runs WAL with synchronous=NORMAL: a power cut may roll back the last commits, never the objects.

    Simulate it: acknowledged C-STOREs whose catalogue rows are gone but whose objects were fsynced. fsck
    --repair (run by ``serve`` after any unclean stop) re-catalogues them with the same content address.
    """
    node = sqlite_scp.node
    with node.catalogue.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    files = sorted(p for p in (cohort / "dicom").rglob("*.dcm"))[:6]
    for path in files:
        assert _store(sqlite_scp, path).Status == 0x0000
    with node.catalogue.session() as s:
        before = dict(s.execute(select(Instance.sop_uid, Instance.object_hash)).tuples().all())
        lost = sorted(before)[:3]
        s.execute(Instance.__table__.delete().where(Instance.sop_uid.in_(lost)))
    report = fsck(node)
    assert sorted(report.orphans) == sorted(before[u] for u in lost)
    assert fsck(node, repair=True).repaired["recatalogued"] == 3
    with node.catalogue.session() as s:
        after = dict(s.execute(select(Instance.sop_uid, Instance.object_hash)).tuples().all())
    assert after == before
    assert fsck(node).clean


def test_c_store_spools_into_the_node_tmp_and_leaves_nothing(sqlite_scp: DicomServer,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The received data set is written to <node>/tmp (0700) as it arrives, never the shared /tmp, and is gone once
    the C-STORE is answered; a file an aborted transfer left there is swept after the next association."""
    import os
    import tempfile
    import time

    from incisive.compat import pynetdicom_3_0_4

    spool = sqlite_scp.node.home / "tmp"
    assert spool.is_dir() and (spool.stat().st_mode & 0o777) == 0o700
    left = spool / "tmpabandoned.dcm"
    left.write_bytes(b"identified bytes of an aborted transfer")
    old = time.time() - 3600
    os.utime(left, (old, old))
    created: list[str] = []
    original = tempfile.NamedTemporaryFile

    def recording(*args: Any, **kwargs: Any) -> Any:
        fh = original(*args, **kwargs)  # pynetdicom closes and unlinks it
        created.append(fh.name)
        return fh

    monkeypatch.setattr(pynetdicom_3_0_4.tempfile, "NamedTemporaryFile", recording)
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    assert _store(sqlite_scp, ds).Status == 0x0000
    assert created and all(Path(name).parent == spool for name in created), created
    assert not any(Path(name).exists() for name in created)
    deadline = time.monotonic() + 10  # the association's end (the sweep) runs after the release returns
    while left.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left.exists(), "an abandoned spool file was not swept after the association"
    with sqlite_scp.node.catalogue.session() as s:
        assert s.scalar(select(func.count(Instance.id))) == 1

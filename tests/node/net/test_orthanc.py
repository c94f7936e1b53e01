"""Orthanc sends to our node as a DICOM modality; our C-FIND and QIDO-RS then show what it sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from tests.node.api.conftest import Api
from tests.node.net.conftest import need_tool
from tests.peers.orthanc import Orthanc


@pytest.fixture
def orthanc(api: Api, tmp_path: Path) -> Iterator[Orthanc]:
    need_tool("Orthanc")
    peer = Orthanc(tmp_path / "orthanc", {"incisive": ("INCISIVE", "127.0.0.1", api.dicom_port)})
    peer.start()
    yield peer
    peer.stop()


def test_orthanc_store_to_node(api: Api, orthanc: Orthanc, cohort: Path) -> None:
    files = sorted(p for p in (cohort / "dicom").rglob("*") if p.is_file())
    sent = [p for p in files if pydicom.dcmread(p, stop_before_pixels=True).Modality in ("CT", "MR")]
    for path in sent:
        orthanc.post("/instances", path.read_bytes())
    study_ids = orthanc.get("/studies")
    orthanc.post("/modalities/incisive/store", study_ids)
    originals = {orthanc.get(f"/studies/{i}")["MainDicomTags"]["StudyInstanceUID"] for i in study_ids}
    expected = {api.node.pseudonymiser.uid(u) for u in originals}

    ae = AE(ae_title="PYTEST")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", api.dicom_port, ae_title="INCISIVE")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.NumberOfStudyRelatedInstances = ""
    found = [i for s, i in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
             if s and s.Status == 0xFF00 and i is not None]
    assoc.release()
    assert {str(i.StudyInstanceUID) for i in found} == expected
    assert sum(int(i.NumberOfStudyRelatedInstances) for i in found) == len(sent)

    qido = httpx.get(f"{api.url}/dicom-web/studies", headers={"Authorization": f"Bearer {api.viewer}"}).json()
    assert {s["0020000D"]["Value"][0] for s in qido} == expected

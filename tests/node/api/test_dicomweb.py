"""DICOMweb round trips with the dicomweb-client package, and bad requests answered with a clear 4xx."""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from sqlalchemy import func, select

from incisive.node.catalogue.models import Instance
from tests.node.api.conftest import Api


def _client(api: Api, token: str) -> DICOMwebClient:
    return DICOMwebClient(f"{api.url}/dicom-web", headers={"Authorization": f"Bearer {token}"})


def _count(api: Api) -> int:
    with api.node.catalogue.session() as s:
        return s.scalar(select(func.count(Instance.id))) or 0


def test_stow_qido_wado_round_trip(api: Api, cohort: Path) -> None:
    files = sorted(p for p in (cohort / "dicom").rglob("*") if p.is_file())
    datasets = [pydicom.dcmread(p) for p in files]
    ct_mr = [d for d in datasets if d.Modality in ("CT", "MR")]
    up = _client(api, api.uploader)
    response = up.store_instances(ct_mr)
    refs = response.ReferencedSOPSequence
    assert len(refs) == len(ct_mr) and "FailedSOPSequence" not in response
    assert _count(api) == len(ct_mr)

    view = _client(api, api.viewer)
    studies = view.search_for_studies()
    assert len(studies) == len({d.StudyInstanceUID for d in ct_mr})
    for item in studies:
        assert item["00100020"]["Value"][0].startswith("P")  # pseudonym, never the original id
    originals = {str(d.PatientID) for d in datasets} | {str(d.PatientName) for d in datasets}
    assert not originals & {item["00100020"]["Value"][0] for item in studies}

    page = view.search_for_studies(limit=2, offset=1)
    assert len(page) == min(2, len(studies) - 1)
    ct = view.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})
    assert ct and all("CT" in s["00080061"]["Value"] for s in ct)
    study_uid = studies[0]["0020000D"]["Value"][0]
    series = view.search_for_series(study_uid, fields=["SeriesDescription"])
    assert series
    series_uid = series[0]["0020000E"]["Value"][0]
    instances = view.search_for_instances(study_uid, series_uid)
    assert len(instances) == series[0]["00201209"]["Value"][0]
    sop_uid = instances[0]["00080018"]["Value"][0]

    instance = view.retrieve_instance(study_uid, series_uid, sop_uid)
    assert instance.SOPInstanceUID == sop_uid and instance.PatientIdentityRemoved == "YES"
    with api.node.catalogue.session() as s:
        digest = s.scalar(select(Instance.object_hash).where(Instance.sop_uid == sop_uid))
    assert digest is not None
    metadata = view.retrieve_series_metadata(study_uid, series_uid)
    assert len(metadata) == len(instances)
    assert all("7FE00010" not in m or "Value" not in m["7FE00010"] for m in metadata)

    # STOW is idempotent
    again = up.store_instances(ct_mr[:3])
    assert len(again.ReferencedSOPSequence) == 3 and _count(api) == len(ct_mr)


def test_tokens_and_roles(sqlite_api: Api) -> None:
    url = f"{sqlite_api.url}/dicom-web/studies"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer inc_not-a-token"}).status_code == 401
    refused = httpx.get(url, headers={"Authorization": f"Bearer {sqlite_api.uploader}"})
    assert refused.status_code == 403 and "viewer" in refused.json()["detail"]
    stow = httpx.post(url, headers={"Authorization": f"Bearer {sqlite_api.viewer}"}, content=b"")
    assert stow.status_code == 403
    ok = httpx.get(url, headers={"Authorization": f"Bearer {sqlite_api.viewer}"})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/dicom+json")
    assert ok.json() == []


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "b0und4ry") -> bytes:
    body = b""
    for content_type, data in parts:
        body += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(("content_type", "parts", "status", "phrase"), [
    ('multipart/related; type="application/dicom"; boundary=other', "good", 400, "boundary"),
    ('multipart/related; type="application/dicom"', "good", 400, "boundary"),
    ("application/dicom", "good", 415, "multipart/related"),
    ('multipart/related; type="application/dicom"; boundary=b0und4ry', "text", 415, "part 2"),
    ('multipart/related; type="application/dicom"; boundary=b0und4ry', "junk", 400, "part 2"),
    ('multipart/related; type="application/dicom"; boundary=b0und4ry', "truncated", 400, "closing boundary"),
])
def test_stow_bad_bodies_store_nothing(sqlite_api: Api, content_type: str, parts: str, status: int,
                                       phrase: str) -> None:
    good = (Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm").read_bytes()
    second = {"good": ("application/dicom", good), "text": ("text/plain", b"hello"),
              "junk": ("application/dicom", b"\x00" * 300), "truncated": ("application/dicom", good)}[parts]
    body = _multipart([("application/dicom", good), second])
    if parts == "truncated":
        body = body[: len(body) - 20]
    r = httpx.post(f"{sqlite_api.url}/dicom-web/studies", content=body,
                   headers={"Authorization": f"Bearer {sqlite_api.uploader}", "Content-Type": content_type})
    assert r.status_code == status, r.text
    assert phrase in r.json()["detail"]
    assert _count(sqlite_api) == 0 and list(sqlite_api.node.store.iter_digests()) == []
    assert httpx.get(f"{sqlite_api.url}/health").status_code == 200


@pytest.mark.parametrize(("query", "phrase"), [
    ("StudyDate=2020-01-01", "StudyDate"),
    ("StudyDate=20201345", "valid calendar date"),
    ("NoSuchKey=1", "unknown query key"),
    ("limit=abc", "limit"),
    ("limit=0", "limit"),
    ("Rows=512", "not a supported matching key"),
    ("00100010=X&fuzzymatching=maybe", "fuzzymatching"),
])
def test_qido_bad_queries(sqlite_api: Api, query: str, phrase: str) -> None:
    r = httpx.get(f"{sqlite_api.url}/dicom-web/studies?{query}",
                  headers={"Authorization": f"Bearer {sqlite_api.viewer}"})
    assert r.status_code == 400 and phrase in r.json()["detail"], r.text


def test_qido_fuzzy_warning_and_wado_not_found(sqlite_api: Api) -> None:
    headers = {"Authorization": f"Bearer {sqlite_api.viewer}"}
    r = httpx.get(f"{sqlite_api.url}/dicom-web/studies?PatientName=X*&fuzzymatching=true", headers=headers)
    assert r.status_code == 200 and "fuzzymatching" in r.headers["warning"]
    r = httpx.get(f"{sqlite_api.url}/dicom-web/studies/1.2.3/series/4.5.6/instances/7.8.9", headers=headers)
    assert r.status_code == 404


def test_wado_refuses_transcoding(sqlite_api: Api) -> None:
    good = (Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm").read_bytes()
    r = httpx.post(f"{sqlite_api.url}/dicom-web/studies", content=_multipart([("application/dicom", good)]),
                   headers={"Authorization": f"Bearer {sqlite_api.uploader}",
                            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0und4ry'})
    assert r.status_code == 200
    retrieve = r.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
    headers = {"Authorization": f"Bearer {sqlite_api.viewer}",
               "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'}
    assert httpx.get(retrieve, headers=headers).status_code == 406
    headers["Accept"] = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
    ok = httpx.get(retrieve, headers=headers)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("multipart/related")


def test_sr_report_text_is_never_stored_or_served(sqlite_api: Api) -> None:
    """Issue 12: a Comprehensive SR whose TEXT item names the patient came back word for word from /metadata."""
    import io

    from tests.node.deid.samples import SECRETS, leaks, report, to_bytes

    ds = report()
    ds.add_new(0x00140104, "PN", "Reviewer^Second")  # Secondary Reviewer Name: no table lists it
    ds = pydicom.dcmread(io.BytesIO(to_bytes(ds)))  # a Part 10 file, as a modality would send it
    response = _client(sqlite_api, sqlite_api.uploader).store_instances([ds])
    assert "FailedSOPSequence" not in response
    view = _client(sqlite_api, sqlite_api.viewer)
    study = view.search_for_studies()[0]["0020000D"]["Value"][0]
    metadata = httpx.get(f"{sqlite_api.url}/dicom-web/studies/{study}/metadata",
                         headers={"Authorization": f"Bearer {sqlite_api.viewer}"})
    assert metadata.status_code == 200
    assert leaks(metadata.text, (*SECRETS, "Reviewer")) == []
    stored = [p for p in (sqlite_api.node.home / "store" / "objects").rglob("*") if p.is_file()]
    assert len(stored) == 1 and b"Jane" not in stored[0].read_bytes()

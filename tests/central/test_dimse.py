"""``incisive central serve``, DIMSE side: one AE on one port, the called AE title picks the tenant.

Real associations: dcmtk's /usr/bin/storescu, /usr/bin/findscu and /usr/bin/echoscu (by full path) and
pynetdicom (to read the exact A-ASSOCIATE-RJ and C-STORE statuses).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from sqlalchemy import func, select

from incisive.central.dimse import CALLED_NOT_RECOGNISED, CALLING_NOT_RECOGNISED, LOCAL_LIMIT
from incisive.central.erase import request_erase
from incisive.central.home import Central
from incisive.central.serve import CentralServices
from incisive.central.tenants import add_tenant
from incisive.common.fsio import atomic_write_text
from incisive.common.settings import CONFIG_NAME, NodeSettings
from incisive.node.catalogue.models import Instance
from incisive.node.home import Node
from tests.central.test_serve_http import Cohort, Side, World, build_world, cohorts  # noqa: F401 - fixture
from tests.node.net.pki import Ca, Issued, make_ca

STORESCU, FINDSCU, ECHOSCU = "/usr/bin/storescu", "/usr/bin/findscu", "/usr/bin/echoscu"


@pytest.fixture
def world(central: Central, tmp_path: Path, cohorts: dict[str, Cohort]) -> Iterator[World]:  # noqa: F811
    yield from build_world(central, tmp_path, cohorts, upload=False)


def count(node: Node) -> int:
    with node.catalogue.session() as s:
        return int(s.scalar(select(func.count(Instance.id))) or 0)


def dcmtk(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120)


def associate(port: int, calling: str, called: str, contexts: Any = None) -> Any:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    for cx in contexts or [Verification, StudyRootQueryRetrieveInformationModelFind,
                           PatientRootQueryRetrieveInformationModelFind]:
        ae.add_requested_context(cx)
    return ae.associate("127.0.0.1", port, ae_title=called)


def rejection(assoc: Any) -> tuple[int, int, int]:
    assert assoc.is_rejected, "association was not rejected"
    rj = assoc.acceptor.primitive
    return int(rj.result), int(rj.result_source), int(rj.diagnostic)


def find(port: int, side: Side, called: str, level: str, model: Any = StudyRootQueryRetrieveInformationModelFind,
         **keys: str) -> list[Dataset]:
    assoc = associate(port, side.calling_ae, called)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(query, keyword, keys.get(keyword, ""))
    found = []
    try:
        for status, identifier in assoc.send_c_find(query, model):
            assert status is not None and status.Status in (0x0000, 0xFF00, 0xFF01), status
            if identifier is not None:
                found.append(identifier)
    finally:
        assoc.release()
    return found


def store_all(port: int, side: Side, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return dcmtk(STORESCU, "-aet", side.calling_ae, "-aec", side.ae_title, "127.0.0.1", str(port),
                 *map(str, files))


def test_called_ae_selects_the_tenant(world: World) -> None:
    a, b, port = world.a, world.b, world.dicom_port
    done = store_all(port, a, a.cohort.files)
    assert done.returncode == 0, done.stderr
    assert count(world.node(a)) == len(a.cohort.files) and count(world.node(b)) == 0
    assert store_all(port, b, b.cohort.files).returncode == 0
    assert count(world.node(b)) == len(b.cohort.files) and count(world.node(a)) == len(a.cohort.files)
    for side, other in ((a, b), (b, a)):
        studies = {str(d.StudyInstanceUID) for d in find(port, side, side.ae_title, "STUDY")}
        assert studies == set(side.cohort.studies)
        sops = {str(d.SOPInstanceUID) for d in find(port, side, side.ae_title, "IMAGE",
                                                   StudyInstanceUID=side.cohort.studies[0],
                                                   SeriesInstanceUID="")}
        assert sops and sops <= set(side.cohort.sops)
        # the other tenant's UIDs and pseudonyms find nothing here
        assert find(port, side, side.ae_title, "STUDY", StudyInstanceUID=other.cohort.studies[0]) == []
        assert find(port, side, side.ae_title, "PATIENT", PatientRootQueryRetrieveInformationModelFind,
                    PatientID=other.cohort.pseudonyms[0]) == []
    listed = dcmtk(FINDSCU, "-S", "-aet", a.calling_ae, "-aec", a.ae_title, "-k", "QueryRetrieveLevel=STUDY",
                   "-k", "StudyInstanceUID", "127.0.0.1", str(port))
    text = listed.stdout + listed.stderr
    assert listed.returncode == 0, text
    assert all(uid in text for uid in a.cohort.studies) and not any(uid in text for uid in b.cohort.studies)


def test_unknown_called_ae_and_foreign_calling_ae_are_rejected(world: World) -> None:
    a, b, port = world.a, world.b, world.dicom_port
    assert rejection(associate(port, a.calling_ae, "NO-SUCH-AE")) == CALLED_NOT_RECOGNISED
    assert rejection(associate(port, a.calling_ae, b.ae_title)) == CALLING_NOT_RECOGNISED  # A's PACS at B's AE
    assert rejection(associate(port, "STRANGER", a.ae_title)) == CALLING_NOT_RECOGNISED
    assert rejection(associate(port, a.calling_ae, "INCISIVE-CENTRAL")) == CALLED_NOT_RECOGNISED
    echo = dcmtk(ECHOSCU, "-aet", a.calling_ae, "-aec", "NO-SUCH-AE", "127.0.0.1", str(port))
    assert echo.returncode != 0 and "Called AE Title Not Recognized" in echo.stderr + echo.stdout
    cross = dcmtk(STORESCU, "-aet", a.calling_ae, "-aec", b.ae_title, "127.0.0.1", str(port),
                  str(a.cohort.files[0]))
    assert cross.returncode != 0 and "Calling AE Title Not Recognized" in cross.stderr + cross.stdout
    assert count(world.node(b)) == 0
    ok = dcmtk(ECHOSCU, "-aet", a.calling_ae, "-aec", a.ae_title, "127.0.0.1", str(port))
    assert ok.returncode == 0, ok.stderr
    assoc = associate(port, a.calling_ae, a.ae_title)
    assert assoc.is_established and assoc.acceptor.ae_title == a.ae_title  # answered under the tenant's title
    assoc.release()


def test_identified_dicom_over_c_store_is_refused_with_the_reason(world: World) -> None:
    a, port = world.a, world.dicom_port
    original = pydicom.dcmread(a.cohort.identified[0])
    assoc = associate(port, a.calling_ae, a.ae_title, [original.SOPClassUID])
    assert assoc.is_established
    try:
        status = assoc.send_c_store(original)
    finally:
        assoc.release()
    assert status.Status == 0xC000 and str(status.ErrorComment).startswith("not de-identified"), status
    assert str(original.PatientName) not in str(status.ErrorComment)
    done = store_all(port, a, a.cohort.identified[:2])
    assert done.returncode != 0 or "Error" in done.stderr
    assert count(world.node(a)) == 0


def test_tenants_come_and_go_while_serving(world: World, tmp_path: Path) -> None:
    from incisive.central.erase import erase_tenant

    central, port = world.central, world.dicom_port
    record, _ = add_tenant(central, "Hospital C", "FR", "it@c", allowed_aes=["PACSC"])
    assoc = associate(port, "PACSC", record.ae_title)
    assert assoc.is_established  # no restart needed
    assoc.release()
    b = world.b
    erase_tenant(central, b.id, request_erase(central, b.id, "tests"))
    assert rejection(associate(port, b.calling_ae, b.ae_title)) == CALLED_NOT_RECOGNISED
    assert associate(port, world.a.calling_ae, world.a.ae_title).is_established


def _limit_tenant(home: Path, **values: Any) -> None:
    settings = NodeSettings.load(home).model_copy(update=values)
    atomic_write_text(home / CONFIG_NAME, settings.to_toml())


def test_one_tenant_cannot_hold_every_association_slot(central: Central) -> None:
    a, _ = add_tenant(central, "Hospital A", "IT", "it@a", allowed_aes=["PACSA"])
    b, _ = add_tenant(central, "Hospital B", "IT", "it@b", allowed_aes=["PACSB"])
    _limit_tenant(central.tenant_dir(a.id), dicom_max_associations=2)
    services = CentralServices(central, host="127.0.0.1", dicom_port=0, http_port=0)
    port = services.start().dicom_port
    held = []
    try:
        held = [associate(port, "PACSA", a.ae_title) for _ in range(2)]
        assert all(x.is_established for x in held)
        assert rejection(associate(port, "PACSA", a.ae_title)) == LOCAL_LIMIT
        other = associate(port, "PACSB", b.ae_title)
        assert other.is_established
        other.release()
        held.pop().release()
        again = associate(port, "PACSA", a.ae_title)  # the slot came back
        assert again.is_established
        held.append(again)
    finally:
        for x in held:
            x.release()
        services.stop()


def test_dicom_tls_for_every_tenant(central: Central, tmp_path: Path, cohorts: dict[str, Cohort]) -> None:  # noqa: F811
    from incisive.node.net.tls import TlsFiles

    ca = make_ca(tmp_path / "pki", "hospital-ca")
    server, client = ca.issue("central", server=True), ca.issue("pacs", server=False)
    a, _ = add_tenant(central, "Hospital A", "IT", "it@a", allowed_aes=["PACSA"])
    services = CentralServices(central, host="127.0.0.1", dicom_port=0, http_port=0,
                               dicom_tls=TlsFiles(server.cert, server.key, ca.cert))
    port = services.start().dicom_port
    try:
        assert services.dicom.tls_mode() == "on, client certificates required"
        done = _tls_store(port, client, ca, a.ae_title, cohorts["a"].files[0])
        assert done.returncode == 0, done.stderr
        assert count(central.tenant_node(a.id)) == 1
        plain = dcmtk(STORESCU, "-to", "10", "-ta", "10", "-aet", "PACSA", "-aec", a.ae_title, "127.0.0.1",
                      str(port), str(cohorts["a"].files[1]))
        assert plain.returncode != 0
    finally:
        services.stop()


def _tls_store(port: int, client: Issued, ca: Ca, called: str, path: Path) -> subprocess.CompletedProcess[str]:
    return dcmtk(STORESCU, "+tls", str(client.key), str(client.cert), "+cf", str(ca.cert), "-aet", "PACSA",
                 "-aec", called, "127.0.0.1", str(port), str(path))

"""A tenant's quota is enforced where instances are recorded (folder import, C-STORE, STOW-RS all pass there):
past the limit the whole batch is refused with a clear error and nothing of it is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from incisive.central.home import Central
from incisive.central.tenants import add_tenant
from incisive.node.catalogue.models import Instance
from incisive.node.home import Node
from incisive.node.ingest.dicom_file import FileOutcome
from incisive.node.net.receive import Receiver
from incisive.node.quota import QuotaExceeded
from tests.central.conftest import fill_tenant


def test_quota_refuses_a_batch_past_the_limit_and_writes_nothing(central: Central, small_cohort: Path) -> None:
    record, _ = add_tenant(central, "Hospital Q", "IT", "it@q.example", quota_instances=3)
    with pytest.raises(QuotaExceeded, match="quota"):
        fill_tenant(central, record.id, small_cohort)
    node = central.tenant_node(record.id)
    with node.catalogue.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 0
    assert list(node.store.iter_digests()) == []


def test_a_receiver_answers_a_quota_refusal_as_an_error_with_its_reason(central: Central) -> None:
    record, _ = add_tenant(central, "Hospital R", "IT", "it@r.example", quota_bytes=10)
    node: Node = central.tenant_node(record.id)
    outcome = FileOutcome("stored", data=b"x" * 100, digest="ab" * 32,
                          facts={"sop_uid": "2.25.1", "study_uid": "2.25.2", "series_uid": "2.25.3"})
    received = Receiver(node, "test").record_many([outcome])
    assert received[0].result == "error" and "quota" in received[0].reason
    assert list(node.store.iter_digests()) == []


def test_stow_past_the_quota_is_507_and_stores_nothing(central: Central, small_cohort: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from incisive.node.api.app import create_app
    from incisive.node.ingest.dicom_import import import_dicom

    plain = Node.init(tmp_path / "provider", provider="Provider")  # what a provider's de-identifier produced
    import_dicom(plain, small_cohort / "dicom", workers=1)
    parts = [plain.store.get(d) for d in list(plain.store.iter_digests())[:3]]
    plain.catalogue.dispose()
    record, manager = add_tenant(central, "Hospital S", "IT", "it@s.example", quota_instances=2)
    node = central.tenant_node(record.id)
    body = b"".join(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts) + b"--b--\r\n"
    with TestClient(create_app(node)) as client:
        r = client.post("/dicom-web/studies", content=body, headers={
            "Authorization": f"Bearer {manager}",
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert r.status_code == 507, r.text
    assert "quota exceeded" in r.json()["detail"]
    assert list(node.store.iter_digests()) == []

"""Tenants: add (node home, ring outside it, catalogue file or schema, AE titles, manager token), isolation of
their catalogues on one PostgreSQL database, usage (counts only), quotas at the door, and the export back."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import create_engine, func, select, text
from typer.testing import CliRunner

from incisive.central.home import Central, tenant_schema
from incisive.central.registry import TenantRecord, UnknownTenant, utc_now
from incisive.central.tenants import add_tenant, export_tenant, list_tenants, set_quota, usage, verify_export
from incisive.cli.central import app
from incisive.common.errors import InputError
from incisive.common.settings import NodeSettings
from incisive.node.api.tokens import create_token, token_role, token_tenant
from incisive.node.catalogue.models import ClinicalRecord, Instance
from incisive.node.crypt_store import EncryptedObjectStore
from incisive.node.home import Node
from incisive.node.quota import QuotaExceeded, enforce_quota, forget, over_quota
from tests.central.conftest import Tenants, fill_tenant

runner = CliRunner()


def test_add_tenant_makes_an_encrypted_verify_door_node(central: Central) -> None:
    record, token = add_tenant(central, "Hospital D", "it", "IT lead <it@hospital-d.example>", 10**9, 5000,
                               allowed_aes=["PACS_D", "MODALITY1"])
    assert (record.id, record.country, record.state, record.ae_title) == ("hospital-d", "IT", "active", "HOSPITAL-D")
    home = central.tenant_dir("hospital-d")
    s = NodeSettings.load(home)
    assert s.tenant_of == str(central.dir) and s.door == "verify" and s.node_id == "hospital-d"
    assert Path(s.keyring) == central.ring_path("hospital-d") and not Path(s.keyring).is_relative_to(home)
    assert s.master_key == central.settings.master_key
    assert (s.quota_bytes, s.quota_instances, s.ae_title, s.allowed_aes) == (10**9, 5000, "HOSPITAL-D",
                                                                              ["PACS_D", "MODALITY1"])
    node = central.tenant_node("hospital-d")
    assert isinstance(node.store, EncryptedObjectStore) and isinstance(node.quarantine, EncryptedObjectStore)
    assert token.startswith("inc_hospital-d.") and token_tenant(token) == "hospital-d"
    assert token_role(node, token) == "manager"
    viewer = create_token(node, "viewer", "reader", tenant="hospital-d")
    assert token_role(node, viewer) == "viewer"
    with pytest.raises(InputError, match="manager token belongs"):
        create_token(node, "manager")
    assert [e["action"] for e in central.audit.entries()][-1] == "tenant.add"
    assert json.loads((central.dir / "tenants.json").read_text())["tenants"]["hospital-d"]["state"] == "active"


def test_node_tokens_keep_their_format(sqlite_node: Node) -> None:
    token = create_token(sqlite_node, "uploader")
    assert token.startswith("inc_") and "." not in token and token_tenant(token) is None
    assert token_role(sqlite_node, token) == "uploader"
    assert token_role(sqlite_node, "inc_other-tenant." + token[4:]) is None


def test_a_token_of_one_tenant_is_nothing_at_another(two_tenants: Tenants) -> None:
    central, [(d, d_token), (e, e_token)] = two_tenants
    assert token_role(central.tenant_node(e.id), d_token) is None
    assert token_role(central.tenant_node(d.id), e_token) is None
    forged = f"inc_{e.id}." + d_token.split(".", 1)[1]
    assert token_role(central.tenant_node(e.id), forged) is None


def test_refusals_and_unique_ae_titles(central: Central) -> None:
    a, _ = add_tenant(central, "Hospital Dermatology Centre North", "IT", "x")
    b, _ = add_tenant(central, "Hospital Dermatology Centre South", "IT", "x")
    assert a.ae_title == "HOSPITAL-DERMATO" and b.ae_title == "HOSPITAL-DERMA-2" and len(b.ae_title) <= 16
    with pytest.raises(InputError, match="exists"):
        add_tenant(central, "Hospital Dermatology Centre North", "IT", "x")
    with pytest.raises(InputError, match="AE title"):
        add_tenant(central, "Other", "IT", "x", ae_title=a.ae_title)
    with pytest.raises(InputError, match="ISO 3166"):
        add_tenant(central, "Other", "Italy", "x")
    with pytest.raises(InputError, match="AE title"):
        add_tenant(central, "Other", "IT", "x", allowed_aes=["A\\B"])
    with pytest.raises(InputError, match="tenant id"):
        add_tenant(central, "Other", "IT", "x", tenant_id="Bad_Id")
    assert [t.id for t in central.tenants()] == [a.id, b.id]
    assert not central.tenant_dir("other").exists() and not central.ring_path("other").exists()


def test_an_interrupted_add_is_cleaned_up_and_redone(central: Central) -> None:
    central.registry.update(lambda r: r.__setitem__("hospital-d", TenantRecord(
        id="hospital-d", name="Hospital D", country="IT", contact="", created_at=utc_now(), state="creating")))
    (central.tenant_dir("hospital-d") / "store").mkdir(parents=True)
    with pytest.raises(UnknownTenant):
        central.tenant("hospital-d")
    record, token = add_tenant(central, "Hospital D", "IT", "x")
    assert record.state == "active" and token_role(central.tenant_node("hospital-d"), token) == "manager"


@pytest.mark.postgres
def test_postgres_schema_per_tenant(central_pg: Central, small_cohort: Path) -> None:
    d, _ = add_tenant(central_pg, "Hospital D", "IT", "x")
    e, _ = add_tenant(central_pg, "Hospital E", "ES", "x")
    fill_tenant(central_pg, d.id, small_cohort)
    engine = create_engine(central_pg.settings.catalogue_url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(text("SELECT table_schema, table_name FROM information_schema.tables "
                                       "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")).all()
    finally:
        engine.dispose()
    schemas = {s for s, _ in tables}
    assert schemas == {tenant_schema(d.id), tenant_schema(e.id)}  # nothing in public
    for schema in schemas:
        names = {t for s, t in tables if s == schema}
        assert {"alembic_version", "instance", "api_token", "clinical_record"} <= names
    node_d, node_e = central_pg.tenant_node(d.id), central_pg.tenant_node(e.id)
    with node_d.catalogue.session() as s:
        assert (s.scalar(select(func.count(Instance.id))) or 0) > 0
    with node_e.catalogue.session() as s:
        assert s.scalar(select(func.count(Instance.id))) == 0
        assert s.scalar(select(func.count(ClinicalRecord.id))) == 0
    node_e.catalogue.check_current()


def test_usage_counts_only(two_tenants: Tenants, small_cohort: Path) -> None:
    central, [(d, _), (e, _)] = two_tenants
    node = fill_tenant(central, d.id, small_cohort)
    rows = {r["tenant"]: r for r in usage(central)}
    with node.catalogue.session() as s:
        count = s.scalar(select(func.count(Instance.id)))
        size = s.scalar(select(func.sum(Instance.size)))
    assert rows[d.id]["objects"] == count and rows[d.id]["bytes"] == size and rows[d.id]["last_upload"]
    assert rows[e.id]["objects"] == 0 and rows[e.id]["last_upload"] is None
    assert rows[d.id]["key_age_days"] == 0.0 and rows[d.id]["key_created_at"]
    assert set(rows[d.id]) == {"tenant", "name", "objects", "bytes", "quarantined", "last_upload", "key_created_at",
                               "key_age_days", "quota_bytes", "quota_instances"}
    assert usage(central, e.id) == [rows[e.id]]
    r = runner.invoke(app, ["tenant", "usage", "--json", "--central", str(central.dir)])
    assert r.exit_code == 0, r.output
    assert {x["tenant"]: x["objects"] for x in json.loads(r.stdout)} == {d.id: count, e.id: 0}
    r = runner.invoke(app, ["tenant", "ls", "--json", "--central", str(central.dir)])
    assert [x["id"] for x in json.loads(r.stdout)] == [d.id, e.id]
    assert [x["id"] for x in list_tenants(central)] == [d.id, e.id]


def test_quota_at_the_door(central: Central, small_cohort: Path) -> None:
    record, _ = add_tenant(central, "Hospital D", "IT", "x", quota_instances=3)
    node = central.tenant_node(record.id)
    assert over_quota(node, 100, 3) is None
    forget(node)
    reason = over_quota(node, 100, 4)
    assert reason is not None and "3 instances" in reason
    with pytest.raises(QuotaExceeded, match="quota exceeded"):
        enforce_quota(node, [10, 10, 10, 10])
    enforce_quota(node, [10])
    with pytest.raises(QuotaExceeded):  # the cached totals count the batch just accepted
        enforce_quota(node, [10, 10, 10])
    set_quota(central, record.id, quota_bytes=1000, quota_instances=0)
    node = central.tenant_node(record.id)
    assert node.settings.quota_bytes == 1000 and node.settings.quota_instances == 0
    forget(node)
    assert over_quota(node, 1000, 1) is None
    assert "bytes" in (over_quota(node, 1001, 1) or "")
    set_quota(central, record.id, quota_bytes=0)
    node = central.tenant_node(record.id)
    fill_tenant(central, record.id, small_cohort)
    forget(node)
    set_quota(central, record.id, quota_instances=1)
    node = central.tenant_node(record.id)
    assert "instances" in (over_quota(node, 1, 1) or "")  # totals from the catalogue: already past


def test_export_gives_the_data_back_verifiably(two_tenants: Tenants, small_cohort: Path, tmp_path: Path) -> None:
    central, [(d, _), (e, _)] = two_tenants
    node = fill_tenant(central, d.id, small_cohort)
    out = tmp_path / "export"
    summary = export_tenant(central, d.id, out)
    with node.catalogue.session() as s:
        n = s.scalar(select(func.count(Instance.id)))
        records = s.scalar(select(func.count(ClinicalRecord.id)))
    assert summary["instances"] == n and summary["clinical_records"] == records
    dicoms = sorted(out.glob("dicom/*/*/*.dcm"))
    assert len(dicoms) == n and summary["quarantined"] == len(list(out.glob("quarantine/*.dcm"))) > 0
    for path in dicoms:
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES" and path.stem == ds.SOPInstanceUID
    lines = (out / "clinical.csv").read_text().splitlines()
    assert lines[0].startswith("pseudonym,diagnosis") and len(lines) == records + 1
    assert verify_export(out) == {"files": summary["files"], "ok": True, "problems": []}
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    r = runner.invoke(app, ["tenant", "export", "--verify", str(out), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"]
    data = dicoms[0].read_bytes()
    dicoms[0].write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    (out / "stray.txt").write_text("x")
    problems = verify_export(out)["problems"]
    assert any("sha256 differs" in p for p in problems) and any("stray.txt" in p for p in problems)
    r = runner.invoke(app, ["tenant", "export", "--verify", str(out)])
    assert r.exit_code == 1
    with pytest.raises(InputError, match="not empty"):
        export_tenant(central, d.id, out)
    with pytest.raises(InputError, match="outside"):
        export_tenant(central, d.id, central.dir / "inside")
    empty = export_tenant(central, e.id, tmp_path / "e")
    assert empty["instances"] == 0 and verify_export(tmp_path / "e")["ok"]
    assert [a["action"] for a in central.audit.entries()].count("tenant.export") == 2


def test_cli_tenant_add_prints_the_manager_token(central: Central) -> None:
    r = runner.invoke(app, ["tenant", "add", "Hospital D", "--country", "IT", "--contact", "IT lead <it@d.example>",
                            "--quota-bytes", "1000000", "--allowed-ae", "PACS_D", "--allowed-ae", "CT1",
                            "--central", str(central.dir)])
    assert r.exit_code == 0, r.output
    token = next(line for line in r.stdout.splitlines() if line.startswith("inc_"))
    assert token_role(central.tenant_node("hospital-d"), token) == "manager"
    assert central.tenant("hospital-d").allowed_aes == ["PACS_D", "CT1"]
    r = runner.invoke(app, ["tenant", "quota", "hospital-d", "--quota-instances", "7", "--json",
                            "--central", str(central.dir)])
    assert r.exit_code == 0 and json.loads(r.stdout)["quota_instances"] == 7

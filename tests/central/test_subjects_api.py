"""Data-subject requests of a Central Node tenant's provider, served in-process over real HTTP: the provider's
uploader de-identifies and uploads (``incisive upload``), then ``incisive compliance subject lookup|erase
--patient-id X --uploader DIR --central URL --token T`` computes the pseudonym with the uploader's key and sends
only it. Lookup counts what the tenant holds; erase removes it from the tenant's store and catalogue (audited in
the tenant's chain, no pseudonym or identifier kept); the other tenant's token gets 404 for the same pseudonym;
a viewer or the operator may not ask; a tenant backup taken before the erase restores without the subject
(SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from incisive.central.home import Central, create_operator_token, tenant_schema
from incisive.central.serve import CentralServices
from incisive.common.audit_log import NodeAudit
from incisive.common.exit_codes import ExitCode
from incisive.node import erasure
from incisive.node.backup import config as backup_config
from incisive.node.backup import ops
from incisive.node.compliance import subjects
from incisive.node.fsck import fsck
from incisive.node.home import Node
from incisive.node.upload.home import Uploader
from incisive.node.upload.run import upload
from tests.central.conftest import Tenants, fill_tenant
from tests.conftest import temp_pg_database

REASON = "Art. 17 request, ticket 77"


@dataclass
class Served:
    central: Central
    url: str
    d: str  # tenant ids
    e: str
    d_manager: str
    e_manager: str
    d_viewer: str
    operator: str
    uploader: Uploader
    patients: list[str]

    def node(self, tenant: str) -> Node:
        return self.central.tenant_node(tenant)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_token(url: str, manager: str, role: str) -> str:
    r = httpx.post(f"{url}/tenant/v1/tokens", json={"role": role, "label": role}, headers=bearer(manager))
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


@pytest.fixture
def served(two_tenants: Tenants, small_cohort: Path, tmp_path: Path) -> Iterator[Served]:
    central, [(d, d_manager), (e, e_manager)] = two_tenants
    # tenant E holds the same patients de-identified under its own key: other pseudonyms
    fill_tenant(central, e.id, small_cohort)
    operator = create_operator_token(central, "tests")
    services = CentralServices(central, host="127.0.0.1", dicom_port=0, http_port=0)
    bound = services.start()
    url = f"http://127.0.0.1:{bound.http_port}"
    try:
        uploader = Uploader.init(tmp_path / "uploader", "Hospital D")
        uploader.settings.workers = 1
        report = upload(uploader, small_cohort / "dicom", url, new_token(url, d_manager, "uploader"),
                        clinical=small_cohort / "clinical.csv", drop=["patient_name"])
        assert report.sent > 0, report.as_dict()
        with (small_cohort / "clinical.csv").open(encoding="utf-8") as fh:
            patients = [row["patient_id"] for row in csv.DictReader(fh)]
        yield Served(central, url, d.id, e.id, d_manager, e_manager, new_token(url, d_manager, "viewer"),
                     operator, uploader, patients)
    finally:
        services.stop()


def subject_cli(s: Served, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "incisive", "compliance", "subject", *args, "--uploader", str(s.uploader.home),
               "--central", s.url, "--token", token, "--json"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_lookup_and_erase_at_the_tenant_with_the_pseudonym_only(served: Served) -> None:
    s = served
    pid = s.patients[0]
    pseudonym = s.uploader.pseudonymiser.patient(pid)
    node_d, node_e = s.node(s.d), s.node(s.e)
    held = erasure.held(node_d, pseudonym)
    assert held.patient == 1 and held.instances > 0 and held.clinical == 1  # what the upload stored
    e_before = {p: erasure.held(node_e, p).as_dict() for p in erasure.pseudonyms(node_e)}
    d_others = {p: erasure.held(node_d, p).as_dict() for p in erasure.pseudonyms(node_d) if p != pseudonym}

    out = subject_cli(s, s.d_manager, "lookup", "--patient-id", pid)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["pseudonym"] == pseudonym and found["held"] and found["counts"] == held.as_dict()

    # the other tenant holds the same patient under another pseudonym: this one is not held there
    other = subject_cli(s, s.e_manager, "lookup", "--patient-id", pid)
    assert other.returncode == ExitCode.INVALID and "not held" in other.stderr
    r = httpx.get(f"{s.url}/tenant/v1/subjects/{pseudonym}", headers=bearer(s.e_manager))
    assert r.status_code == 404 and pseudonym not in r.text
    r = httpx.post(f"{s.url}/tenant/v1/subjects/{pseudonym}/erase", json={"reason": REASON},
                   headers=bearer(s.e_manager))
    assert r.status_code == 404
    # only the manager asks (the operator never reaches tenant data: last, below); a malformed pseudonym is refused
    assert httpx.get(f"{s.url}/tenant/v1/subjects/{pseudonym}", headers=bearer(s.d_viewer)).status_code == 403
    assert httpx.get(f"{s.url}/tenant/v1/subjects/{pseudonym}").status_code == 401
    assert httpx.get(f"{s.url}/tenant/v1/subjects/not-a-pseudonym", headers=bearer(s.d_manager)).status_code == 400
    r = httpx.post(f"{s.url}/tenant/v1/subjects/{pseudonym}/erase", json={"reason": f"for {pseudonym}"},
                   headers=bearer(s.d_manager))
    assert r.status_code == 400 and pseudonym not in r.text
    assert erasure.held(node_d, pseudonym) == held

    out = subject_cli(s, s.d_manager, "erase", "--patient-id", pid, "--reason", REASON, "--confirm")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["state"] == "done" and record["erased"] == held.as_dict()
    assert erasure.held(node_d, pseudonym).empty and fsck(node_d).clean
    assert {p: erasure.held(node_d, p).as_dict() for p in erasure.pseudonyms(node_d)} == d_others
    assert {p: erasure.held(node_e, p).as_dict() for p in erasure.pseudonyms(node_e)} == e_before
    [saved] = subjects.erasures(node_d)
    assert saved["id"] == record["id"] and saved["where"] == "tenant" and saved["requested_by"].endswith("(manager)")
    entries = [e for e in NodeAudit(node_d.home).entries() if e["action"].startswith("subject.")]
    assert [e["action"] for e in entries] == ["subject.lookup", "subject.erase.start", "subject.erase"]
    assert all(e["actor"].startswith("token:") for e in entries)
    assert NodeAudit(node_d.home).verify().ok and not subjects.erasures(node_e)
    # neither the identifier nor the pseudonym is kept anywhere in the Central Node's files
    # (on SQLite the catalogue file and its write-ahead log too: the erase zeroes what it deleted)
    for path in sorted(s.central.dir.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            assert pid.encode() not in data and pseudonym.encode() not in data, path

    # asked again: not held, and the lookup says it was erased
    again = subject_cli(s, s.d_manager, "lookup", "--patient-id", pid)
    assert again.returncode == ExitCode.INVALID and "erased before" in again.stderr
    again = subject_cli(s, s.d_manager, "erase", "--patient-id", pid, "--reason", REASON, "--confirm")
    assert again.returncode == ExitCode.INVALID and "not held" in again.stderr
    # (the central chain records the path of an operator's refused attempt, so this one comes after the scan)
    assert httpx.get(f"{s.url}/tenant/v1/subjects/{pseudonym}", headers=bearer(s.operator)).status_code == 403


def test_the_provider_side_needs_its_key_and_the_url(served: Served, tmp_path: Path) -> None:
    s = served
    pid = s.patients[1]
    plain = [sys.executable, "-m", "incisive", "compliance", "subject", "lookup", "--patient-id", pid]
    missing_uploader = subprocess.run([*plain, "--uploader", str(tmp_path / "nowhere"), "--central", s.url,
                                       "--token", s.d_manager], capture_output=True, text=True, timeout=120)
    assert missing_uploader.returncode == ExitCode.INVALID and "uploader" in missing_uploader.stderr
    not_https = subject_cli(Served(**{**s.__dict__, "url": "http://central.example"}), s.d_manager, "lookup",
                            "--patient-id", pid)
    assert not_https.returncode == ExitCode.INVALID and "https" in not_https.stderr
    bad_token = subject_cli(s, f"inc_{s.d}.forged", "lookup", "--patient-id", pid)
    assert bad_token.returncode == ExitCode.INVALID and "401" in bad_token.stderr
    for out in (missing_uploader, not_https, bad_token):
        assert pid not in out.stderr and pid not in out.stdout
    # the operator's --home on the tenant directory cannot look a patient up: the provider's key is not there
    on_tenant = subprocess.run([*plain, "--home", str(s.central.tenant_dir(s.d))], capture_output=True, text=True,
                               timeout=120)
    assert on_tenant.returncode == ExitCode.INVALID and "--uploader" in on_tenant.stderr


@contextlib.contextmanager
def empty_catalogue(central: Central, tenant: str) -> Iterator[str]:
    """An empty catalogue of the tenant's backend to restore into (PostgreSQL: its schema on the search path)."""
    if not central.settings.catalogue_url:
        yield ""
        return
    with temp_pg_database() as url:
        yield url + f"?options=-csearch_path%3D{tenant_schema(tenant)}"


def test_a_tenant_backup_from_before_the_erase_restores_without_the_subject(served: Served, tmp_path: Path) -> None:
    s = served
    node_d = s.node(s.d)
    where = tmp_path / "backup-d"
    where.mkdir()
    target = backup_config.add_target(node_d.home, "disk", str(where))
    _, snapshot = ops.run(node_d, target)
    pseudonym = s.uploader.pseudonymiser.patient(s.patients[2])
    kept = {p: erasure.held(node_d, p).as_dict() for p in erasure.pseudonyms(node_d) if p != pseudonym}
    r = httpx.post(f"{s.url}/tenant/v1/subjects/{pseudonym}/erase", json={"reason": REASON},
                   headers=bearer(s.d_manager), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["backups"]["targets"] == [{"name": "disk", "kind": "dir", "list": "listed"}]
    # the snapshot still holds the subject's ciphertext (until retention); restoring it removes the subject again
    with empty_catalogue(s.central, s.d) as url:
        report = ops.restore(target, s.d, snapshot.id, tmp_path / "restored-d", catalogue_url=url)
        restored = Node.open(tmp_path / "restored-d")
        try:
            assert report.erased_again == 1 and erasure.held(restored, pseudonym).empty
            assert {p: erasure.held(restored, p).as_dict() for p in erasure.pseudonyms(restored)} == kept
            assert fsck(restored).clean
        finally:
            restored.catalogue.dispose()

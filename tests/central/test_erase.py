"""Erase: only under the manager's recorded request; a crypto-shred in a safe order, audited step by step; a
``kill -9`` at every step (real subprocesses) leaves a fenced, consistent state that the next open finishes; a
copy of the tenant taken before (a backup) cannot be decrypted afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from incisive.central.erase import KILL_ENV, STEPS, erase_tenant, pending_erases, request_erase
from incisive.central.home import Central, tenant_schema
from incisive.central.registry import Registry, UnknownTenant
from incisive.cli.central import app
from incisive.common.audit_log import NodeAudit
from incisive.common.envelope import EnvelopeError, open_envelope
from incisive.common.errors import InputError
from incisive.common.keyring import KeyRing
from incisive.node.store import ObjectStore
from tests.central.conftest import Tenants, fill_tenant

runner = CliRunner()
ERASE = """
import sys
from pathlib import Path
from incisive.central.home import Central
from incisive.central.erase import erase_tenant
central = Central.open(Path(sys.argv[1]), resume=False)
erase_tenant(central, sys.argv[2], sys.argv[3])
"""


def catalogue_present(central: Central, tenant_id: str) -> bool:
    if not central.settings.catalogue_url:
        return (central.tenant_dir(tenant_id) / "catalogue.db").exists()
    engine = create_engine(central.settings.catalogue_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"),
                                {"s": tenant_schema(tenant_id)}).first() is not None
    finally:
        engine.dispose()


def objects_left(central: Central, tenant_id: str) -> int:
    home = central.tenant_dir(tenant_id)
    return sum(1 for name in ("store", "quarantine") for _ in ObjectStore(home / name).iter_digests())


def assert_erased(central: Central, tenant_id: str, request_id: str) -> None:
    record = Registry(central.dir).get(tenant_id)
    assert record is not None and record.state == "erased" and record.erase_request == request_id
    assert record.name == "Hospital D" and record.created_at and record.erased_at
    assert record.contact == "" and record.allowed_aes == [] and record.erase_requests == []
    assert not central.ring_path(tenant_id).exists()
    assert not list(central.ring_path(tenant_id).parent.glob(f".{tenant_id}.json.*"))
    assert not central.tenant_dir(tenant_id).exists() and not catalogue_present(central, tenant_id)
    assert pending_erases(central) == []
    with pytest.raises(UnknownTenant):
        central.tenant_node(tenant_id)
    actions = [e["action"] for e in central.audit.entries() if e.get("target") == tenant_id]
    for step in STEPS:
        assert f"tenant.erase.{step}" in actions
    assert central.audit.verify().ok


def test_request_is_recorded_and_needed(two_tenants: Tenants) -> None:
    central, [(d, _), _] = two_tenants
    with pytest.raises(InputError, match="no erase request"):
        erase_tenant(central, d.id, "er-made-up")
    assert central.audit.entries() and [e for e in central.audit.entries()][-1]["outcome"] == "refused"
    request_id = request_erase(central, d.id, "manager (tenant add)")
    assert request_id.startswith("er-")
    assert central.tenant(d.id).erase_requests[0]["id"] == request_id
    tenant_audit = [e for e in NodeAudit(central.tenant_dir(d.id)).entries()]
    assert tenant_audit[-1]["action"] == "tenant.erase-requested" and tenant_audit[-1]["details"]["request"] == \
        request_id
    assert [e for e in central.audit.entries()][-1]["action"] == "tenant.erase-requested"
    r = runner.invoke(app, ["tenant", "erase", d.id, "--request", request_id, "--central", str(central.dir)])
    assert isinstance(r.exception, InputError) and "--confirm" in str(r.exception)
    assert central.tenant(d.id).state == "active"
    with pytest.raises(UnknownTenant):
        request_erase(central, "nobody", "x")


def test_erase_crypto_shreds_and_leaves_the_other_tenant(two_tenants: Tenants, small_cohort: Path,
                                                         tmp_path: Path) -> None:
    central, [(d, _), (e, _)] = two_tenants
    node_d = fill_tenant(central, d.id, small_cohort)
    fill_tenant(central, e.id, small_cohort)
    backup = tmp_path / "backup-before-erase"
    shutil.copytree(central.tenant_dir(d.id), backup)  # what a replica / restic snapshot holds
    some = next(ObjectStore(backup / "store").iter_digests())
    assert node_d.store.get(some)  # readable before
    request_id = request_erase(central, d.id, "manager")
    seen: list[tuple[int, int]] = []
    erase_tenant(central, d.id, request_id, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert_erased(central, d.id, request_id)
    # the pre-erase copy: ciphertext whose key no longer exists anywhere
    blob = ObjectStore(backup / "store").get(some)
    with pytest.raises(EnvelopeError):
        KeyRing.open(central.ring_path(d.id), d.id, central.provider)
    ring_e = KeyRing.open(central.ring_path(e.id), e.id, central.provider)
    with pytest.raises(EnvelopeError):
        open_envelope(blob, ring_e.key)
    assert not any(d.id in p.name for p in central.dir.rglob("*.json") if p.parent.name == "keys")
    # the other tenant is untouched and readable
    node_e = central.tenant_node(e.id)
    assert sum(1 for _ in node_e.store.iter_digests()) > 0
    for address in node_e.store.iter_digests():
        assert node_e.store.verify_content(address)
    with pytest.raises(InputError, match="erased"):
        erase_tenant(central, d.id, request_id)
    assert [t.id for t in central.tenants()] == [e.id]
    assert {t.id: t.state for t in central.tenants(include_erased=True)} == {d.id: "erased", e.id: "active"}


@pytest.mark.parametrize("kill_at", [*STEPS, "objects-half"])
def test_kill_9_at_every_step_then_resume(two_tenants: Tenants, small_cohort: Path, kill_at: str) -> None:
    central, [(d, _), (e, _)] = two_tenants
    fill_tenant(central, d.id, small_cohort)
    request_id = request_erase(central, d.id, "manager")
    central.close()
    env = {**os.environ, KILL_ENV: kill_at}
    done = subprocess.run([sys.executable, "-c", ERASE, str(central.dir), d.id, request_id], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    # the state a kill left: fenced before the key went, the key gone before any data
    record = Registry(central.dir).get(d.id)
    assert record is not None and pending_erases(central) == [d.id]
    ring = central.ring_path(d.id).exists()
    if not ring:
        assert record.state in ("erasing", "erased")
    if not catalogue_present(central, d.id) or objects_left(central, d.id) == 0 or \
            not central.tenant_dir(d.id).exists():
        assert not ring
    if kill_at != "fenced":
        with pytest.raises(UnknownTenant):
            central.tenant(d.id)
    # any later open finishes the journal
    reopened = Central.open(central.dir)
    assert_erased(reopened, d.id, request_id)
    assert reopened.tenant(e.id).state == "active"
    reopened.tenant_node(e.id).catalogue.check_current()
    reopened.close()


def test_cli_erase_and_resume(two_tenants: Tenants, small_cohort: Path) -> None:
    central, [(d, _), _] = two_tenants
    fill_tenant(central, d.id, small_cohort)
    request_id = request_erase(central, d.id, "manager")
    central.close()
    env = {**os.environ, KILL_ENV: "key-destroyed"}
    done = subprocess.run([sys.executable, "-c", ERASE, str(central.dir), d.id, request_id], env=env,
                          capture_output=True, timeout=120)
    assert done.returncode == -9
    r = runner.invoke(app, ["tenant", "erase", d.id, "--confirm", "--request", "er-other", "--central",
                            str(central.dir)])
    assert isinstance(r.exception, InputError) and "--resume" in str(r.exception)
    r = runner.invoke(app, ["tenant", "erase", d.id, "--resume", "--json", "--central", str(central.dir)])
    assert r.exit_code == 0, r.output
    assert_erased(Central.open(central.dir), d.id, request_id)

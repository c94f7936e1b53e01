"""Key rotation: re-wrapping every ring under a new master key, a new data key, and re-encrypting a tenant's
objects, each interrupted by a real ``kill -9`` and re-run: no object lost, every row readable, on SQLite and
PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from incisive.central.home import Central
from incisive.central.rotate import KILL_ENV, NEW_PASSPHRASE_ENV, rotate_keys
from incisive.central.tenants import add_tenant
from incisive.cli.central import app
from incisive.common.envelope import HEADER_BYTES, EnvelopeError, envelope_key_id, open_envelope
from incisive.common.keyring import PASSPHRASE_ENV, FileMasterKey, KeyRing, MasterKeyError
from incisive.node.catalogue.models import Instance, QuarantineItem
from incisive.node.crypt_store import EncryptedObjectStore
from tests.central.conftest import Tenants, fill_tenant, make_central

runner = CliRunner()
ROTATE = """
import sys
from pathlib import Path
from incisive.central.home import Central
from incisive.central.rotate import rotate_keys
central = Central.open(Path(sys.argv[1]), rotation_ok=True)
rotate_keys(central, sys.argv[2] or None, reencrypt=sys.argv[3] == "1")
"""


def contents(central_dir: Path, tenant_id: str) -> dict[str, str]:
    """sop uid -> sha256 of the plaintext of every row's object, read through a freshly opened Central Node."""
    central = Central.open(central_dir)
    try:
        node = central.tenant_node(tenant_id)
        out: dict[str, str] = {}
        for store, model in ((node.store, Instance), (node.quarantine, QuarantineItem)):
            with node.catalogue.session() as s:
                for uid, address in s.execute(select(model.sop_uid, model.object_hash)):
                    out[uid] = hashlib.sha256(store.get(address)).hexdigest()
        return out
    finally:
        central.close()


def key_ids(central: Central, tenant_id: str) -> set[str]:
    node = central.tenant_node(tenant_id)
    found = set()
    for store in (node.store, node.quarantine):
        for address in store.iter_digests():
            with store.path(address).open("rb") as fh:
                found.add(envelope_key_id(fh.read(HEADER_BYTES)))
    return found


def referenced(central: Central, tenant_id: str) -> tuple[set[str], set[str]]:
    node = central.tenant_node(tenant_id)
    on_disk = {a for store in (node.store, node.quarantine) for a in store.iter_digests()}
    with node.catalogue.session() as s:
        named = set(s.scalars(select(Instance.object_hash))) | set(s.scalars(select(QuarantineItem.object_hash)))
    return on_disk, named


def run_killed(central: Central, kill_at: str, tenant: str = "", reencrypt: bool = False) -> None:
    central.close()
    env = {**os.environ, KILL_ENV: kill_at}
    done = subprocess.run([sys.executable, "-c", ROTATE, str(central.dir), tenant, "1" if reencrypt else "0"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr


def test_master_rotation_rewraps_every_ring(two_tenants: Tenants, small_cohort: Path, tmp_path: Path) -> None:
    central, tenants = two_tenants
    for record, _ in tenants:
        fill_tenant(central, record.id, small_cohort)
    before = {r.id: contents(central.dir, r.id) for r, _ in tenants}
    key = central.dir / "secrets" / "master.key"
    old = tmp_path / "old.key"
    old.write_bytes(key.read_bytes())
    old.chmod(0o600)
    result = rotate_keys(central)["rewrapped"]
    assert result == {"rings": 2, "rewrapped": 2, "already_rewrapped": 0}
    assert key.read_bytes() != old.read_bytes() and not list(key.parent.glob("master-next.*"))
    assert len(json.loads((key.parent / "master.check").read_text())["probes"]) == 1
    assert {r.id: contents(central.dir, r.id) for r, _ in tenants} == before
    for record, _ in tenants:
        with pytest.raises(MasterKeyError):
            KeyRing.open(central.ring_path(record.id), record.id, FileMasterKey.open(old))
    assert [e["action"] for e in central.audit.entries()][-1] == "keys.rotate-master"


@pytest.mark.parametrize("kill_at", ["ring-1", "promoted"])
def test_kill_9_during_master_rotation(central: Central, small_cohort: Path, kill_at: str) -> None:
    ids = [add_tenant(central, name, "IT", "x")[0].id for name in ("Hospital D", "Hospital E", "Hospital F")]
    fill_tenant(central, ids[0], small_cohort)
    before = contents(central.dir, ids[0])
    run_killed(central, kill_at)
    if kill_at == "ring-1":
        with pytest.raises(MasterKeyError, match="rotation was interrupted"):
            Central.open(central.dir)
        again = Central.open(central.dir, rotation_ok=True)
        assert rotate_keys(again)["rewrapped"] == {"rings": 3, "rewrapped": 2, "already_rewrapped": 1}
    else:
        Central.open(central.dir)  # the new key is in place; every ring opens under it
    reopened = Central.open(central.dir)
    for tenant_id in ids:
        KeyRing.open(reopened.ring_path(tenant_id), tenant_id, reopened.provider)
    assert contents(central.dir, ids[0]) == before


def test_passphrase_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_cohort: Path) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "old passphrase")
    c = make_central(tmp_path / "c", passphrase="old passphrase")
    record, _ = add_tenant(c, "Hospital D", "IT", "x")
    fill_tenant(c, record.id, small_cohort)
    before = contents(c.dir, record.id)
    monkeypatch.setenv(NEW_PASSPHRASE_ENV, "new passphrase")
    r = runner.invoke(app, ["keys", "rotate", "--json", "--central", str(c.dir)])
    assert r.exit_code == 0, r.output
    with pytest.raises(MasterKeyError, match="wrong passphrase"):
        Central.open(c.dir)
    monkeypatch.setenv(PASSPHRASE_ENV, "new passphrase")
    assert contents(c.dir, record.id) == before


def test_new_data_key_keeps_old_objects_readable(central: Central, small_cohort: Path) -> None:
    record, _ = add_tenant(central, "Hospital D", "IT", "x")
    fill_tenant(central, record.id, small_cohort)
    first = key_ids(central, record.id)
    new = rotate_keys(central, record.id)["new_data_key"]["active_key"]
    assert new not in first
    ring = KeyRing.open(central.ring_path(record.id), record.id, central.provider)
    assert ring.active_id == new and {k.state for k in ring.info() if k.id in first} == {"decrypt-only"}
    assert len(contents(central.dir, record.id)) > 0


def test_reencrypt_reseals_everything(two_tenants: Tenants, small_cohort: Path) -> None:
    central, [(d, _), (e, _)] = two_tenants
    fill_tenant(central, d.id, small_cohort)
    fill_tenant(central, e.id, small_cohort)
    before, e_before = contents(central.dir, d.id), referenced(central, e.id)
    node = central.tenant_node(d.id)
    assert isinstance(node.store, EncryptedObjectStore)
    old_address = next(node.store.iter_digests())
    backup_blob = node.store.get_sealed(old_address)  # a copy in a backup made before
    old_keys = key_ids(central, d.id)
    result = rotate_keys(central, d.id, reencrypt=True)["reencrypted"][0]
    assert result["complete"] and result["resealed"] == len(before) and result["retired"] == []
    assert key_ids(central, d.id) == {result["active_key"]} and not old_keys & {result["active_key"]}
    on_disk, named = referenced(central, d.id)
    assert on_disk == named and old_address not in on_disk
    assert contents(central.dir, d.id) == before
    assert referenced(central, e.id) == e_before  # the other tenant untouched
    ring = KeyRing.open(central.ring_path(d.id), d.id, central.provider)
    assert open_envelope(backup_blob, ring.key)  # the old key stays decrypt-only: old backups still open
    assert not (central.dir / "rotate" / f"{d.id}.json").exists()
    r = runner.invoke(app, ["keys", "rotate", "--tenant", d.id, "--re-encrypt", "--drop-retired", "--json",
                            "--central", str(central.dir)])
    assert r.exit_code == 0, r.output
    dropped = json.loads(r.stdout)["reencrypted"][0]
    assert old_keys <= set(dropped["retired"]) and dropped["complete"]
    ring = KeyRing.open(central.ring_path(d.id), d.id, central.provider)
    with pytest.raises(EnvelopeError):
        open_envelope(backup_blob, ring.key)
    assert contents(central.dir, d.id) == before


@pytest.mark.parametrize("kill_at", ["object-1-written", "object-2-committed", "object-5-written"])
def test_kill_9_during_reencrypt_loses_nothing(two_tenants: Tenants, small_cohort: Path, kill_at: str) -> None:
    central, [(d, _), _] = two_tenants
    fill_tenant(central, d.id, small_cohort)
    before = contents(central.dir, d.id)
    run_killed(central, kill_at, d.id, reencrypt=True)
    assert contents(central.dir, d.id) == before  # every row readable right after the kill
    again = Central.open(central.dir)
    result = rotate_keys(again, d.id, reencrypt=True)["reencrypted"][0]
    assert result["complete"] and result["swept"] == (1 if kill_at.endswith("committed") else 0)
    n = int(kill_at.split("-")[1])
    assert result["resealed"] == len(before) - (n if kill_at.endswith("committed") else n - 1)
    assert key_ids(again, d.id) == {result["active_key"]}
    on_disk, named = referenced(again, d.id)
    assert on_disk == named  # no leftover of the killed run
    assert contents(central.dir, d.id) == before
    ring = KeyRing.open(again.ring_path(d.id), d.id, again.provider)
    assert len([k for k in ring.info() if k.state == "active"]) == 1
    again.close()

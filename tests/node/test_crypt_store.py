"""The encrypted object store, alone and as the store of a tenant node (import, re-import, fsck)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select, update

from incisive.common.envelope import CHUNK, EnvelopeError, sealed_size
from incisive.common.errors import IntegrityError
from incisive.common.fsio import atomic_write_text
from incisive.common.keyring import FileMasterKey, KeyRing, MasterKeyError
from incisive.common.settings import CONFIG_NAME
from incisive.node.catalogue.models import Instance
from incisive.node.crypt_store import EncryptedObjectStore
from incisive.node.fsck import fsck
from incisive.node.home import Node
from incisive.node.ingest.dicom_import import import_dicom
from incisive.node.store import ObjectStore

MARKER = b"PLAINTEXT-MARKER-4711"
DICOM_MARKERS = (b"DICM", b"1.2.840.10008", b"ISO_IR", b"incisive")


def make_ring(central: Path, tenant: str) -> tuple[Path, Path]:
    """A master key (shared by the central's tenants) and a fresh ring for ``tenant``: (ring path, key path)."""
    key = central / "secrets" / "master.key"
    provider = FileMasterKey.open(key) if key.exists() else FileMasterKey.create(key)
    ring = central / "keys" / f"{tenant}.json"
    KeyRing.create(ring, tenant, provider)
    return ring, key


def encrypted_node(tmp_path: Path, catalogue_url: str = "", tenant: str = "tenant-a") -> Node:
    """A tenant node as a Central Node makes it: Node.init, then keyring/master_key in its settings."""
    central = tmp_path / "central"
    home = central / "tenants" / tenant
    node = Node.init(home, provider=f"Provider of {tenant}", node_id=tenant, catalogue_url=catalogue_url)
    node.catalogue.dispose()
    ring, key = make_ring(central, tenant)
    settings = node.settings.model_copy(update={"tenant_of": str(central), "keyring": str(ring),
                                                "master_key": f"file:{key}"})
    atomic_write_text(home / CONFIG_NAME, settings.to_toml())
    return Node.open(home)


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    path, key = make_ring(tmp_path / "central", "tenant-a")
    return KeyRing.open(path, "tenant-a", FileMasterKey.open(key))


@pytest.fixture
def store(tmp_path: Path, ring: KeyRing) -> EncryptedObjectStore:
    s = EncryptedObjectStore(tmp_path / "store", ring)
    s.init()
    return s


@pytest.fixture
def enode(tmp_path: Path, catalogue_url: str) -> Iterator[Node]:
    n = encrypted_node(tmp_path, catalogue_url)
    yield n
    n.catalogue.dispose()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_put_get_round_trip(store: EncryptedObjectStore, size: int) -> None:
    data = (MARKER * (size // len(MARKER) + 1))[:size]
    address, created = store.put(data)
    assert created and store.get(address) == data
    assert address == hashlib.sha256(store.path(address).read_bytes()).hexdigest()  # address of the ciphertext
    assert store.size(address) == sealed_size(size)
    assert store.verify(address) and store.verify_content(address)
    assert store.put(data) == (address, False)  # deterministic: nothing new
    assert store.seal(data, hashlib.sha256(data).hexdigest()) == (store.path(address).read_bytes(), address)
    if size >= len(MARKER):
        assert MARKER not in store.path(address).read_bytes()


def test_different_tenants_different_addresses(tmp_path: Path, store: EncryptedObjectStore) -> None:
    path, key = make_ring(tmp_path / "central", "tenant-b")
    other = EncryptedObjectStore(tmp_path / "store-b", KeyRing.open(path, "tenant-b", FileMasterKey.open(key)))
    other.init()
    plain = ObjectStore(tmp_path / "plain")
    plain.init()
    data = MARKER * 1000
    a, _ = store.put(data)
    b, _ = other.put(data)
    p, _ = plain.put(data)
    assert len({a, b, p}) == 3 and p == hashlib.sha256(data).hexdigest()
    other.path(a).parent.mkdir(parents=True, exist_ok=True)  # tenant A's object in B's store does not open
    other.path(a).write_bytes(store.path(a).read_bytes())
    with pytest.raises(EnvelopeError):
        other.get(a)
    assert not other.verify_content(a)


def test_tampered_object_fails(store: EncryptedObjectStore) -> None:
    data = os.urandom(2 * CHUNK + 10)
    address, _ = store.put(data)
    raw = bytearray(store.path(address).read_bytes())
    for where in (0, 30, 60, CHUNK, len(raw) - 1):
        changed = bytearray(raw)
        changed[where] ^= 0x01
        store.path(address).write_bytes(bytes(changed))
        with pytest.raises(IntegrityError):
            store.get(address)
        assert not store.verify_content(address)
        # renamed to the hash of its new bytes (the file check passes): the envelope still fails
        forged = hashlib.sha256(changed).hexdigest()
        ObjectStore(store.root).put(bytes(changed))
        assert store.verify(forged) and not store.verify_content(forged)
        with pytest.raises(EnvelopeError):
            store.get(forged)
    store.path(address).write_bytes(bytes(raw))
    assert store.get(address) == data
    store.path(address).write_bytes(bytes(raw[: -(CHUNK // 2)]))
    assert not store.verify_content(address)
    store.path(address).unlink()
    assert not store.verify_content(address)


def test_old_key_objects_stay_readable_after_add_key(store: EncryptedObjectStore) -> None:
    old, _ = store.put(b"old" * 100)
    store.ring.add_key()
    new, created = store.put(b"old" * 100)  # sealed under the new active key: another address
    assert created and new != old
    assert store.get(old) == store.get(new) == b"old" * 100


def test_tenant_node_store_is_encrypted_and_lazy(tmp_path: Path) -> None:
    node = encrypted_node(tmp_path)
    try:
        assert isinstance(node.store, EncryptedObjectStore) and isinstance(node.quarantine, EncryptedObjectStore)
        assert node.store.ring is node.quarantine.ring
        address, _ = node.quarantine.put(MARKER)
        assert node.quarantine.get(address) == MARKER
        master = tmp_path / "central" / "secrets" / "master.key"
        master.unlink()
        reopened = Node.open(node.home)  # opening the node does not need the key; using the store does
        with pytest.raises(MasterKeyError, match="not found"):
            _ = reopened.store
        FileMasterKey.create(master)  # another master key at the same place
        with pytest.raises(MasterKeyError, match="wrong master key"):
            _ = reopened.quarantine
        reopened.catalogue.dispose()
    finally:
        node.catalogue.dispose()


def test_import_stores_only_ciphertext_and_reimport_nothing(enode: Node, cohort: Path) -> None:
    first = import_dicom(enode, cohort / "dicom", workers=2)
    assert first.counts["imported"] > 0 and first.counts["rejected"] == 0
    files = _files(enode.store.objects) | {f"q/{k}": v for k, v in _files(enode.quarantine.objects).items()}
    assert len(files) == first.counts["imported"] + first.counts["quarantined"]
    for name, raw in files.items():
        assert raw[:4] == b"INCE", name
        assert not any(m in raw for m in DICOM_MARKERS), name
    with enode.catalogue.session() as s:
        rows = list(s.execute(select(Instance.object_hash, Instance.sop_uid)))
    for digest, uid in rows:
        ds = dcmread(io.BytesIO(enode.store.get(digest)))
        assert ds.SOPInstanceUID == uid and ds.PatientIdentityRemoved == "YES"

    second = import_dicom(enode, cohort / "dicom", workers=1)
    assert second.counts["imported"] == 0 and second.bytes_stored == 0
    assert second.counts["duplicate"] == first.counts["imported"] + first.counts["quarantined"]
    again = _files(enode.store.objects) | {f"q/{k}": v for k, v in _files(enode.quarantine.objects).items()}
    assert again == files
    assert fsck(enode).clean


def test_fsck_finds_tampered_and_unopenable_objects(enode: Node, cohort: Path) -> None:
    import_dicom(enode, cohort / "dicom", workers=1)
    digests = sorted(enode.store.iter_digests())
    raw = bytearray(enode.store.path(digests[0]).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    enode.store.path(digests[0]).write_bytes(bytes(raw))
    # an object whose file hash is right but which is no sealed object of this tenant, pointed at by a row
    forged, _ = ObjectStore(enode.store.root).put(b"a plain object in an encrypted store")
    with enode.catalogue.session() as s:
        s.execute(update(Instance).where(Instance.object_hash == digests[1]).values(object_hash=forged))
    report = fsck(enode)
    assert sorted(report.corrupt) == sorted([digests[0], forged])
    assert report.orphans == [digests[1]] and not report.clean
    repaired = fsck(enode, repair=True).repaired
    assert repaired["moved_aside"] == 2 and repaired["recatalogued"] == 1  # the orphan opens and is ours
    assert fsck(enode).clean


def test_same_content_across_keys(store: EncryptedObjectStore) -> None:
    data = MARKER * 10
    plain = hashlib.sha256(data).hexdigest()
    old, _ = store.put(data)
    store.ring.add_key()
    assert store.same_content(old, plain) and not store.same_content(old, hashlib.sha256(b"x").hexdigest())
    assert not store.same_content("0" * 64, plain)  # no such object
    store.ring.retire(store.ring.ids()[0])
    assert not store.same_content(old, plain)  # its key is gone: it cannot be the same readable object


def test_reimport_after_rotation_duplicates_and_conflicts(enode: Node, cohort: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    files = sorted(p for p in (cohort / "dicom").rglob("*") if p.is_file())[:3]
    for i, f in enumerate(files):
        (src / f"{i}.dcm").write_bytes(f.read_bytes())
    (src / "copy.dcm").write_bytes(files[0].read_bytes())  # the same instance twice in one batch
    first = import_dicom(enode, src, workers=1)
    assert first.counts["imported"] + first.counts["quarantined"] == 3 and first.counts["duplicate"] == 1
    before = _files(enode.store.objects)

    assert enode.keyring is not None
    enode.keyring.add_key()  # a rotation: new objects are sealed under another key, at other addresses
    again = import_dicom(enode, src, workers=1)
    assert again.counts["duplicate"] == 4 and again.bytes_stored == 0 and _files(enode.store.objects) == before

    ds = dcmread(files[1])
    ds.InstanceNumber = 999  # same SOPInstanceUID, other content
    (src / "1.dcm").unlink()
    ds.save_as(src / "1.dcm")
    third = import_dicom(enode, src, workers=1)
    assert third.counts["conflict"] == 1 and _files(enode.store.objects) == before


def test_backup_holds_ciphertext_and_restores(tmp_path: Path, cohort: Path) -> None:
    """A replica of an encrypted node: the pool holds only sealed files (verified by their hash, no key needed),
    the key ring is not in it, and the restored node opens them with the ring outside it (SQLite: the backup
    code is not catalogue-specific; tests/node/backup runs both backends)."""
    from incisive.node.backup import ops
    from tests.node.backup.helpers import dir_target, store_hashes

    node = encrypted_node(tmp_path)
    import_dicom(node, cohort / "dicom", workers=1)
    target = dir_target(tmp_path)
    report, _ = ops.run(node, target)
    assert report.copied == report.objects > 0
    assert not ops.verify(target, node.settings.node_id, full=True, home=node.home).problems
    backed_up = [p for p in Path(target.location).rglob("*") if p.is_file()]
    assert not any(p.name.endswith(".json") and b"wrapped" in p.read_bytes() for p in backed_up)  # no key ring
    pool = [p.read_bytes() for p in backed_up if p.parent.parent.parent.name == "objects"]
    assert len(pool) == report.objects and all(raw[:4] == b"INCE" for raw in pool)
    assert not any(m in raw for raw in pool for m in DICOM_MARKERS)
    before = store_hashes(node.home)
    node.catalogue.dispose()

    to = tmp_path / "restored"
    ops.restore(target, node.settings.node_id, "latest", to)
    assert store_hashes(to) == before
    restored = Node.open(to)
    try:
        assert isinstance(restored.store, EncryptedObjectStore) and fsck(restored).clean
        digest = next(iter(restored.store.iter_digests()))
        assert dcmread(io.BytesIO(restored.store.get(digest))).PatientIdentityRemoved == "YES"
    finally:
        restored.catalogue.dispose()

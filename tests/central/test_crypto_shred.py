"""What a Central Node writes holds no tenant's data in plain text, and erasing a tenant makes every copy of it
unreadable: a byte scan of the object stores, the logs and a backup finds no pseudonym, UID or pixel pattern of
either tenant; after ``tenant erase``, a restore of a backup taken before the erase cannot decrypt, while the other
tenant's backup restores and reads (on SQLite and PostgreSQL catalogues)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from incisive.central.erase import erase_tenant, request_erase
from incisive.central.home import Central
from incisive.common.envelope import EnvelopeError, open_envelope
from incisive.common.errors import InputError
from incisive.node.backup import config as backup_config
from incisive.node.backup import ops
from incisive.node.catalogue.models import Instance, Patient, Study
from incisive.node.home import Node
from tests.central.conftest import Tenants, fill_tenant
from tests.conftest import temp_pg_database

# the catalogue keeps pseudonyms and UIDs in clear by design (docs/central-node.md says what and why); the scan
# is of everything else the Central Node writes
CLEAR_BY_DESIGN = ("catalogue.db", "catalogue.db-wal", "catalogue.db-shm")


def _secrets_of(node: Node) -> set[bytes]:
    """Pseudonyms, study UIDs and a high-entropy window of pixel data of every stored instance of the tenant."""
    found: set[bytes] = set()
    with node.catalogue.session() as s:
        found |= {p.encode() for p in s.scalars(select(Patient.pseudonym))}
        found |= {u.encode() for u in s.scalars(select(Study.study_uid))}
        digests = list(s.scalars(select(Instance.object_hash)))
    assert digests
    for digest in digests:
        ds = pydicom.dcmread(io.BytesIO(node.store.get(digest)))
        pixels = bytes(ds.PixelData) if "PixelData" in ds else b""
        for start in range(0, max(len(pixels) - 48, 0), 16):
            window = pixels[start:start + 48]
            if len(set(window)) >= 24:  # not a run of background: a pattern only this image has
                found.add(window)
                break
    return found


def _scan(roots: list[Path], needles: set[bytes]) -> list[tuple[str, int]]:
    hits = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and path.name not in CLEAR_BY_DESIGN:
                data = path.read_bytes()
                hits += [(str(path.relative_to(root)), len(n)) for n in needles if n in data]
    return hits


def _backup(node: Node, where: Path) -> backup_config.Target:
    where.mkdir()
    target = backup_config.add_target(node.home, "disk", str(where))
    ops.run(node, target)
    return target


def test_no_plaintext_anywhere_and_erase_shreds_every_backup(two_tenants: Tenants, small_cohort: Path,
                                                              tmp_path: Path) -> None:
    central, [(d, _), (e, _)] = two_tenants
    nodes = {t.id: fill_tenant(central, t.id, small_cohort) for t in (d, e)}
    needles = set().union(*(_secrets_of(n) for n in nodes.values()))
    assert len(needles) > 10
    targets = {tid: _backup(node, tmp_path / f"backup-{tid}") for tid, node in nodes.items()}

    # the stores, the logs, the whole central directory and both backups: ciphertext only
    roots = [central.dir, *(Path(t.location) for t in targets.values())]
    assert _scan(roots, needles) == []
    # and the scan can find what it looks for: the plaintext of one object holds its own needles
    one = nodes[d.id]
    with one.catalogue.session() as s:
        digest = s.scalars(select(Instance.object_hash)).first()
    assert digest is not None
    assert any(n in one.store.get(digest) for n in needles)
    # the same instance is sealed to other bytes by the other tenant: no cross-tenant equality of addresses
    addresses = {tid: set(n.store.iter_digests()) for tid, n in nodes.items()}
    assert not addresses[d.id] & addresses[e.id]

    # erase D under its manager's recorded request
    for node in nodes.values():
        node.catalogue.dispose()
    request = request_erase(central, d.id, "manager")
    erase_tenant(central, d.id, request)
    assert not central.ring_path(d.id).exists()
    assert not central.tenant_dir(d.id).exists()
    # this process's log handler of the erased tenant went with it: logging goes on (a handler left behind made
    # every later log call in the process raise FileNotFoundError)
    handlers = [h for h in logging.getLogger("incisive").handlers if isinstance(h, logging.FileHandler)]
    assert not [h for h in handlers if str(central.tenant_dir(d.id)) in h.baseFilename]
    Node.init(tmp_path / "after-erase", provider="After").catalogue.dispose()

    # a backup taken before the erase: its objects are still there, and nothing can open them
    with pytest.raises(InputError, match="erased"):
        ops.restore(targets[d.id], d.id, "latest", tmp_path / "restored-d")
    assert not (tmp_path / "restored-d").exists() or not any((tmp_path / "restored-d").iterdir())
    pool = sorted((Path(targets[d.id].location)).rglob("objects/*/*/*"))
    assert pool
    survivors = Central.open(central.dir)
    try:
        ring_e = survivors.tenant_node(e.id).keyring
        assert ring_e is not None
        for path in pool[:5]:
            with pytest.raises(EnvelopeError):
                open_envelope(path.read_bytes(), ring_e.key)

        # the other tenant's backup restores and reads
        with _restore_url(survivors) as url:
            report = ops.restore(targets[e.id], e.id, "latest", tmp_path / "restored-e", catalogue_url=url)
            restored = Node.open(Path(report.home))
            try:
                with restored.catalogue.session() as s:
                    digests = list(s.scalars(select(Instance.object_hash)))
                assert digests and all(restored.store.get(x)[128:132] == b"DICM" for x in digests)
            finally:
                restored.catalogue.dispose()
    finally:
        survivors.close()


@contextlib.contextmanager
def _restore_url(central: Central) -> Iterator[str]:
    """An empty catalogue of the tenant's backend to restore into (SQLite: the default; PostgreSQL: a new database,
    dropped afterwards, whose search_path names the tenant's schema, which the dump recreates)."""
    if not central.settings.catalogue_url:
        yield ""
        return
    with temp_pg_database() as url:
        yield url + "?options=-csearch_path%3Dtenant_hospital_e"

"""Key rotation on a Central Node, resumable after ``kill -9`` at any point and never losing an object.

``incisive central keys rotate`` (no option) **re-wraps** every tenant's ring under a new master key:

1. a new master key is written beside the old one (``secrets/master-next.key`` or ``master-next.scrypt``, the
   new passphrase from ``$INCISIVE_NEW_MASTER_PASSPHRASE``, else the current one with a new salt) and
   ``master.check`` gets a probe for each key;
2. each ring is re-wrapped (one durable atomic write per ring, :meth:`KeyRing.rewrap`); a ring that already
   opens under the new key is skipped, so a re-run after a kill tries both keys for each ring and goes on;
3. the new key file replaces the old one atomically (one rename), then ``master.check`` keeps only its probe.

While ``master-next.*`` exists :meth:`Central.open` refuses to start (a rotation is unfinished: some rings open
under the old key, some under the new); re-running ``keys rotate`` finishes it. Data keys do not change, so no
object is touched and backups stay readable.

``--tenant T`` alone adds a new data key to T's ring: new objects are sealed under it, older ones stay readable
under the previous key (decrypt-only). ``--re-encrypt [--tenant T]`` also re-seals every object under the new key:
for each catalogue row (instances, quarantine) whose object is sealed under another key, the object is re-sealed
and written (fsynced) first, then the row's ``object_hash`` is updated and committed (guarded by its old value),
then the old object is removed. A kill between any two of these leaves the old object and its row (still
readable, the old key is kept) or both objects (the row points at one of them); a re-run continues under the same
target key (``<central>/rotate/<tenant>.json``) and sweeps the old-key objects it left (no row names them
and a row names their plaintext re-sealed; any other object without a row is left for ``fsck``). When no row
uses an old key any more it stays in the ring as ``decrypt-only``, because backups made before the re-encryption
still need it; ``--drop-retired`` retires it (its wrapped bytes are dropped: those old backups can no longer be
decrypted, a crypto-shred of them).

A ``central serve`` that is running keeps the rings it opened; restart it after a rotation.

Test hook: ``INCISIVE_TEST_ROTATE_KILL_AT`` = ``ring-N`` (after the N-th ring is re-wrapped), ``promoted``
(after the key file is replaced), ``object-N-written`` / ``object-N-committed`` (around the N-th re-sealed row)
makes the process ``SIGKILL`` itself; only ``tests/central/test_rotate.py`` sets it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from incisive.central.home import NEXT_KEY, Central, write_probe
from incisive.central.registry import utc_now
from incisive.common.envelope import HEADER_BYTES, envelope_key_id, is_envelope
from incisive.common.errors import InputError
from incisive.common.fsio import atomic_write_text, fsync_dir
from incisive.common.keyring import (
    PASSPHRASE_ENV,
    FileMasterKey,
    KeyProvider,
    KeyRing,
    MasterKeyError,
    PassphraseMasterKey,
)
from incisive.node.catalogue.models import Instance, QuarantineItem
from incisive.node.crypt_store import EncryptedObjectStore

__all__ = ["NEW_PASSPHRASE_ENV", "add_data_key", "reencrypt_tenant", "rotate_keys", "rotate_master"]

NEW_PASSPHRASE_ENV = "INCISIVE_NEW_MASTER_PASSPHRASE"  # noqa: S105 - a variable name
KILL_ENV = "INCISIVE_TEST_ROTATE_KILL_AT"
Progress = Callable[[int, int], None]


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_ENV) == name:  # test-only hook, see the module docstring
        os.kill(os.getpid(), signal.SIGKILL)


def rotate_keys(central: Central, tenant: str | None = None, reencrypt: bool = False, drop_retired: bool = False,
                progress: Progress | None = None) -> dict[str, Any]:
    """The ``keys rotate`` command: re-wrap (default), a new data key (``tenant``), or re-encrypt."""
    if reencrypt:
        tenants = [central.tenant(tenant).id] if tenant else [r.id for r in central.tenants()]
        return {"reencrypted": [reencrypt_tenant(central, t, drop_retired, progress) for t in tenants]}
    if drop_retired:
        raise InputError("--drop-retired goes with --re-encrypt")
    if tenant:
        return {"new_data_key": add_data_key(central, tenant)}
    return {"rewrapped": rotate_master(central, progress)}


# --- master key -------------------------------------------------------------------------------------------------
def _master_path(central: Central) -> tuple[str, Path]:
    kind, _, where = central.settings.master_key.partition(":")
    return kind, Path(where).expanduser()


def _next_key(central: Central) -> tuple[KeyProvider, Path]:
    kind, current = _master_path(central)
    if kind == "file":
        path = current.with_name(f"{NEXT_KEY}.key")
        return (FileMasterKey.open(path) if path.exists() else FileMasterKey.create(path)), path
    if kind == "passphrase":
        path = current.with_name(f"{NEXT_KEY}.scrypt")
        passphrase = os.environ.get(NEW_PASSPHRASE_ENV) or os.environ.get(PASSPHRASE_ENV)
        if path.exists():
            return PassphraseMasterKey.open(path, passphrase), path
        return PassphraseMasterKey.create(path, passphrase), path
    raise MasterKeyError(f"cannot rotate a {kind!r} master key here")


def rotate_master(central: Central, progress: Progress | None = None) -> dict[str, Any]:
    """Re-wrap every tenant's ring under a new master key, then put the new key in the old one's place."""
    check = central.secrets_dir / "master.check"
    new, next_path = _next_key(central)
    write_probe(check, [central.provider, new])
    records = [r for r in central.tenants(include_erased=True) if r.state in ("active", "creating")]
    rewrapped = skipped = 0
    for number, record in enumerate(records, 1):
        path = central.ring_path(record.id)
        if not path.exists():
            continue
        try:
            KeyRing.open(path, record.id, new)
            skipped += 1  # re-wrapped by an earlier, interrupted run
        except MasterKeyError:
            KeyRing.open(path, record.id, central.provider).rewrap(new)
            rewrapped += 1
            _kill_point(f"ring-{rewrapped}")
        if progress is not None:
            progress(number, len(records))
    _kind, current = _master_path(central)
    os.replace(next_path, current)
    fsync_dir(current.parent)
    _kill_point("promoted")
    write_probe(check, [new])
    central.provider = new
    central.close()  # cached tenant nodes hold rings wrapped under the old key
    result = {"rings": len(records), "rewrapped": rewrapped, "already_rewrapped": skipped}
    central.audit.append("operator", "keys.rotate-master", "master-key", details=result)
    return result


# --- data keys --------------------------------------------------------------------------------------------------
def add_data_key(central: Central, tenant_id: str) -> dict[str, Any]:
    """A new active data key for a tenant; objects sealed before stay readable under the old one."""
    central.tenant(tenant_id)
    ring = KeyRing.open(central.ring_path(tenant_id), tenant_id, central.provider)
    key_id = ring.add_key()
    central.forget_node(tenant_id)
    central.audit.append("operator", "keys.new-data-key", tenant_id, node=tenant_id, details={"key": key_id})
    return {"tenant": tenant_id, "active_key": key_id}


def _journal_path(central: Central, tenant_id: str) -> Path:
    return central.dir / "rotate" / f"{tenant_id}.json"


def _key_of(store: EncryptedObjectStore, address: str) -> str | None:
    """The key id an object is sealed under; ``None`` when it is missing or not sealed."""
    try:
        with store.path(address).open("rb") as fh:
            head = fh.read(HEADER_BYTES)
    except FileNotFoundError:
        return None
    return envelope_key_id(head) if is_envelope(head) else None


def reencrypt_tenant(central: Central, tenant_id: str, drop_retired: bool = False,
                     progress: Progress | None = None) -> dict[str, Any]:
    """Re-seal every object of a tenant under a new data key (resumable); the old keys once no row uses them."""
    central.tenant(tenant_id)
    journal_path = _journal_path(central, tenant_id)
    ring = KeyRing.open(central.ring_path(tenant_id), tenant_id, central.provider)
    if journal_path.exists():
        journal = json.loads(journal_path.read_text())
        journal["target"] = ring.active_id  # the key an interrupted run re-sealed under (or a newer one)
    else:
        started = utc_now()
        old = [k.id for k in ring.info() if k.state != "retired"]
        journal = {"tenant": tenant_id, "target": ring.add_key(), "old": old, "started_at": started}
    journal_path.parent.mkdir(mode=0o700, exist_ok=True)
    atomic_write_text(journal_path, json.dumps(journal, indent=1) + "\n", mode=0o600)
    target = str(journal["target"])
    central.forget_node(tenant_id)
    node = central.tenant_node(tenant_id)
    if not isinstance(node.store, EncryptedObjectStore) or not isinstance(node.quarantine, EncryptedObjectStore):
        raise InputError(f"tenant {tenant_id!r} has no encrypted store")
    stores: list[tuple[EncryptedObjectStore, Any]] = [(node.store, Instance), (node.quarantine, QuarantineItem)]
    counts = {"resealed": 0, "unchanged": 0, "missing": 0, "swept": 0}
    rows: list[tuple[EncryptedObjectStore, Any, int, str]] = []
    for store, model in stores:
        with node.catalogue.session() as s:
            rows += [(store, model, i, h) for i, h in s.execute(select(model.id, model.object_hash))]
    for number, (store, model, row_id, address) in enumerate(rows, 1):
        key_id = _key_of(store, address)
        if key_id is None:
            counts["missing"] += 1
        elif key_id == target:
            counts["unchanged"] += 1
        else:
            _reseal(node.catalogue, store, model, row_id, address, counts["resealed"] + 1)
            counts["resealed"] += 1
        if progress is not None:
            progress(number, len(rows))
    counts["swept"] = _sweep(node.catalogue, stores, target)
    in_use = _keys_in_use(node.catalogue, stores)
    retired = []
    if in_use <= {target}:
        for key in ring.info():
            if key.id != target and key.state != "retired" and drop_retired:
                ring.retire(key.id)
                retired.append(key.id)
        journal_path.unlink()
        fsync_dir(journal_path.parent)
    result = {"tenant": tenant_id, "active_key": target, **counts, "retired": retired,
              "complete": in_use <= {target},
              "decrypt_only": [k.id for k in ring.info() if k.state == "decrypt-only"]}
    central.forget_node(tenant_id)
    central.audit.append("operator", "keys.re-encrypt", tenant_id, node=tenant_id,
                         details={k: v for k, v in result.items() if k != "tenant"})
    return result


def _reseal(catalogue: Any, store: EncryptedObjectStore, model: Any, row_id: int, address: str, n: int) -> None:
    plain = store.get(address)  # file hash, every tag and the content hash checked
    blob, new = store.seal(plain, hashlib.sha256(plain).hexdigest())
    store.put_sealed(blob, new)  # durable before the row names it
    _kill_point(f"object-{n}-written")
    with catalogue.session() as s:
        s.execute(update(model).where(model.id == row_id, model.object_hash == address).values(object_hash=new))
    _kill_point(f"object-{n}-committed")
    with catalogue.session() as s:
        still = s.scalar(select(model.id).where(model.object_hash == address).limit(1))
    if still is None:
        store.remove(address)


def _sweep(catalogue: Any, stores: list[tuple[EncryptedObjectStore, Any]], target: str) -> int:
    """Remove old-key objects an interrupted run left: unnamed, and whose plaintext a row now names re-sealed.

    Any other object without a row (e.g. one a power cut left before its row, which ``fsck --repair``
    re-catalogues) is left alone.
    """
    swept = 0
    for store, model in stores:
        with catalogue.session() as s:
            named = set(s.scalars(select(model.object_hash)))
        for address in store.iter_digests():
            if address in named:
                continue
            key_id = _key_of(store, address)
            if key_id is None or key_id == target:
                continue
            plain = store.get(address)
            _blob, resealed = store.seal(plain, hashlib.sha256(plain).hexdigest())
            if resealed in named and store.verify(resealed):
                store.remove(address)
                swept += 1
    return swept


def _keys_in_use(catalogue: Any, stores: list[tuple[EncryptedObjectStore, Any]]) -> set[str]:
    used: set[str] = set()
    for store, model in stores:
        with catalogue.session() as s:
            for address in s.scalars(select(model.object_hash)):
                key_id = _key_of(store, address)
                if key_id is not None:
                    used.add(key_id)
    return used

import hashlib
import threading
from pathlib import Path

import pytest

from incisive.common.errors import IntegrityError
from incisive.node.store import ObjectStore


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    s = ObjectStore(tmp_path / "store")
    s.init()
    return s


def test_put_is_content_addressed_sharded_and_idempotent(store: ObjectStore) -> None:
    data = b"DICM" * 1000
    digest, created = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest() and created
    assert store.path(digest) == store.objects / digest[:2] / digest[2:4] / digest
    assert store.get(digest) == data
    again, created_again = store.put(data)
    assert again == digest and not created_again
    assert list(store.iter_digests()) == [digest]
    assert not list(store.tmp.iterdir())


def test_get_detects_a_flipped_byte(store: ObjectStore) -> None:
    digest, _ = store.put(b"abcdef" * 100)
    path = store.path(digest)
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=digest):
        store.get(digest)
    assert not store.verify(digest)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ab/../../x", "A" * 64, "0" * 63, ""])
def test_addresses_must_be_digests(store: ObjectStore, bad: str) -> None:
    with pytest.raises(ValueError):
        store.path(bad)


def test_concurrent_puts_of_the_same_object(store: ObjectStore) -> None:
    data = bytes(range(256)) * 512
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(store.put(data)[0])) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert store.get(results[0]) == data
    assert not list(store.tmp.iterdir())


def test_clean_tmp_removes_partial_writes(store: ObjectStore) -> None:
    (store.tmp / "abc.123.part").write_bytes(b"half")
    assert store.clean_tmp() == 1
    assert not list(store.tmp.iterdir())


@pytest.mark.parametrize("torn", [b"", b"DICM" * 10, b"XXXX" * 1000])
def test_put_rewrites_a_torn_object_left_by_a_crash(store: ObjectStore, torn: bytes) -> None:
    """A crash between rename and fsync can leave short or unwritten bytes at the final name: put repairs it."""
    data = b"DICM" * 1000
    digest = hashlib.sha256(data).hexdigest()
    path = store.path(digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(torn)
    assert store.put(data) == (digest, True)
    assert store.get(digest) == data
    assert not list(store.tmp.iterdir())

"""Content-addressed object store (sha256), durable and idempotent.

Layout: ``objects/ab/cd/abcd…`` (two levels of 256-way sharding). A write goes to ``tmp/`` with ``O_EXCL``,
is renamed into place, then the file and the directories that changed are fsynced, so after ``put`` returns
the object survives a crash or power cut. The same bytes always land at the same address: a second ``put``
verifies the object and writes nothing. ``get`` re-hashes what it reads and raises on mismatch.

``put(data)`` is ``put_sealed(*seal(data, sha256(data)))``: ``seal`` gives the bytes to write and their address
(the data itself here; the sealed form in :mod:`incisive.node.crypt_store`), ``put_sealed`` writes them.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from incisive.common.errors import IntegrityError
from incisive.common.fsio import fsync_dir

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


def check_digest(digest: str) -> str:
    """Reject anything that is not a lower-case sha256 hex digest (no path tricks)."""
    if not _HEX64.fullmatch(digest):
        raise ValueError("object address must be 64 lower-case hex characters")
    return digest


class ObjectStore:
    sealed: ClassVar[bool] = False  # files are the data itself; EncryptedObjectStore: sealed envelopes

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"

    def init(self) -> None:
        for directory in (self.root, self.objects, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.objects / digest[:2] / digest[2:4] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, data: bytes) -> tuple[str, bool]:
        """Store ``data``; returns (sha256 hex, created). Durable when it returns.

        Order: write the temporary file, create the shard directories if needed, rename it into place, fsync
        the file, then fsync the shard directory and the parents that gained an entry. On a journaling file
        system the file's fsync commits the data, the mkdirs and the rename in one journal commit, and the
        directory fsyncs that POSIX needs find nothing left to commit (one commit per object instead of two).
        Until ``put`` returns, a crash may leave a torn object at its final name; nothing refers to it (the
        catalogue row is committed after ``put`` returns), and the next ``put`` of the same bytes finds the
        mismatch and writes it again. An object already present is verified and fsynced before it is
        reported as stored: another writer may still be on its way to its own fsync.
        """
        return self.put_sealed(*self.seal(data, hashlib.sha256(data).hexdigest()))

    def seal(self, data: bytes, plain_digest: str) -> tuple[bytes, str]:
        """The bytes this store writes for ``data`` (sha256 hex ``plain_digest``) and their address.

        A plain store writes the data as is, at its own digest; an encrypted one
        (:class:`incisive.node.crypt_store.EncryptedObjectStore`) seals it. Callers that write the catalogue row
        before the object (ingest) seal first, so the row holds the address the object will have.
        """
        return data, check_digest(plain_digest)

    def put_sealed(self, blob: bytes, address: str) -> tuple[str, bool]:
        """Store what :meth:`seal` returned (``address`` is trusted: it is the sha256 of ``blob``)."""
        digest = address
        final = self.path(digest)
        if self._present(digest):
            return digest, False
        tmp = self.tmp / f"{digest}.{secrets.token_hex(6)}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            shard = final.parent
            changed = [shard]
            if not shard.is_dir():
                changed.append(shard.parent)  # objects/ab gains cd
                if not shard.parent.is_dir():
                    changed.append(shard.parent.parent)  # objects gains ab
                shard.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            os.fsync(fd)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        for directory in changed:
            fsync_dir(directory)
        return digest, True

    def _present(self, digest: str) -> bool:
        """The object is stored complete (a torn write from a crash is not) and, fsynced here, durable."""
        if not self.verify(digest):
            return False
        path = self.path(digest)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(path.parent)
        return True

    def get(self, digest: str) -> bytes:
        """Read an object and verify its hash; :class:`IntegrityError` when the bytes changed."""
        data = self.path(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"object {digest} fails its checksum")
        return data

    def hash_file(self, digest: str) -> str:
        """sha256 of the stored file, streamed (for fsck on large objects)."""
        h = hashlib.sha256()
        with self.path(digest).open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def verify(self, digest: str) -> bool:
        try:
            return self.hash_file(digest) == digest
        except FileNotFoundError:
            return False

    def same_content(self, address: str, plain_digest: str) -> bool:
        """The object at ``address`` holds the data whose sha256 is ``plain_digest`` (without reading it here)."""
        return address == plain_digest

    def verify_content(self, digest: str) -> bool:
        """The object is intact: its file hash (an encrypted store also checks every tag and the content hash)."""
        return self.verify(digest)

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def iter_digests(self) -> Iterator[str]:
        """Every object address present (names that are not digests are ignored)."""
        if not self.objects.is_dir():
            return
        for first in sorted(self.objects.iterdir()):
            for second in sorted(first.iterdir()) if first.is_dir() else ():
                for entry in sorted(second.iterdir()) if second.is_dir() else ():
                    if _HEX64.fullmatch(entry.name):
                        yield entry.name

    def remove(self, digest: str) -> None:
        path = self.path(digest)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    def clean_tmp(self) -> int:
        """Remove partial writes left by a crash; returns how many."""
        count = 0
        for entry in self.tmp.glob("*.part") if self.tmp.is_dir() else ():
            entry.unlink(missing_ok=True)
            count += 1
        return count

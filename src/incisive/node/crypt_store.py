"""An object store whose files are sealed (:mod:`incisive.common.envelope`) under a tenant's key ring.

Same layout, write order and durability as :class:`~incisive.node.store.ObjectStore`; the address of an object
is the sha256 of its *sealed* file, so fsck's file check, backups, replicas and restic work on ciphertext
unchanged and hold nothing else. Sealing is deterministic per (data key, plaintext): putting the same instance
twice stores nothing new, while another tenant's key gives another address. ``get`` checks the file hash, every
chunk's tag and the content hash, and returns the plaintext; any change raises
:class:`~incisive.common.errors.IntegrityError` (:class:`~incisive.common.envelope.EnvelopeError` for a sealed
object that does not open). Objects sealed under an older, decrypt-only key stay readable; new ones are sealed
under the ring's active key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from incisive.common.envelope import HEADER_BYTES, EnvelopeError, content_matches, open_chunks, open_envelope, seal
from incisive.common.errors import IntegrityError
from incisive.common.keyring import KeyRing
from incisive.node.store import ObjectStore, check_digest

__all__ = ["EncryptedObjectStore"]


class EncryptedObjectStore(ObjectStore):
    sealed = True

    def __init__(self, root: Path, ring: KeyRing) -> None:
        super().__init__(root)
        self.ring = ring

    def seal(self, data: bytes, plain_digest: str) -> tuple[bytes, str]:
        """(sealed bytes, their sha256): the file ``put_sealed`` writes and its address."""
        key_id, key = self.ring.active()
        blob = seal(data, key, key_id, digest=bytes.fromhex(check_digest(plain_digest)))
        return blob, hashlib.sha256(blob).hexdigest()

    def same_content(self, address: str, plain_digest: str) -> bool:
        """The object at ``address`` was sealed from the data of sha256 ``plain_digest``, under any of the ring's
        keys (its header's salt is the keyed hash of the plaintext's digest): a re-import after a key rotation is
        a duplicate, not a conflict. Reads the header only; the tags are fsck's business."""
        try:
            with self.path(address).open("rb") as fh:
                head = fh.read(HEADER_BYTES)
            return content_matches(head, bytes.fromhex(check_digest(plain_digest)), self.ring.key)
        except (OSError, EnvelopeError):
            return False

    def get(self, digest: str) -> bytes:
        """The plaintext of an object, after its file hash, every tag and its content hash are checked."""
        return open_envelope(super().get(digest), self.ring.key)

    def get_sealed(self, digest: str) -> bytes:
        """The sealed file, its hash checked (for a copy that stays encrypted)."""
        return super().get(digest)

    def verify_content(self, digest: str) -> bool:
        """File hash, every chunk's tag and the content hash, streamed (memory: one chunk)."""
        file_hash = hashlib.sha256()
        try:
            with self.path(digest).open("rb") as fh:

                def read(n: int) -> bytes:
                    data = fh.read(n)
                    file_hash.update(data)
                    return data

                for _ in open_chunks(read, self.ring.key):
                    pass
        except (FileNotFoundError, EnvelopeError, IntegrityError):
            return False
        return file_hash.hexdigest() == digest

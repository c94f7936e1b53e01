"""Hostile: patches the child's wire code so the reply frame claims a 1 TiB body."""

import struct

from incisive.federated.sandbox import wire


def _forged(header, arrays=None):
    return struct.pack(">4sIQ", b"ISB1", 2, 1 << 40) + b"{}"


class _Model:
    def state_dict(self):
        wire.pack_frame = _forged
        return {}


def build_model(manifest):
    return _Model()

"""Hostile: patches the child's wire code so the reply is not a frame at all."""

from incisive.federated.sandbox import wire


class _Model:
    def state_dict(self):
        wire.pack_frame = lambda header, arrays=None: b"GARBAGE-not-a-frame" * 10
        return {}


def build_model(manifest):
    return _Model()

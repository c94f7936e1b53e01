"""Noisy but benign: prints to stdout (and writes to fd 1) at import and in build_model; the protocol holds."""

import os
import sys

import numpy as np

print("CHATTY top-level print to stdout")
os.write(1, b"ISB1\x00\x00\x00\x00 raw bytes on fd 1\n")


class _Model:
    def state_dict(self):
        return {"weight": np.ones((1, 30), dtype=np.float32), "bias": np.zeros(1, dtype=np.float32)}


def build_model(manifest):
    print("CHATTY print in build_model")
    sys.stdout.write("CHATTY sys.stdout.write\n")
    os.write(1, b"CHATTY os.write(1)\n")
    return _Model()

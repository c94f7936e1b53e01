"""Hostile: allocates 20 GiB (not caught: the job fails with the bundle's MemoryError)."""

import numpy as np


def build_model(manifest):
    block = np.empty(20 << 30, dtype=np.uint8)
    block[:: 1 << 20] = 1
    raise RuntimeError("allocated 20 GiB")

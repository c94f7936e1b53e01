"""Hostile: returns a 64 MB array (over the test's max_output_mb)."""

import numpy as np


class _Model:
    def state_dict(self):
        return {"weight": np.zeros(16 << 20, dtype=np.float32)}


def build_model(manifest):
    return _Model()

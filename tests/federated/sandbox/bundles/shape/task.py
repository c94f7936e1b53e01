"""Hostile: a weight of another shape than the model declares (29 features instead of 30)."""

import numpy as np


class _Model:
    def state_dict(self):
        return {"weight": np.zeros((1, 29), dtype=np.float32), "bias": np.zeros(1, dtype=np.float32)}


def build_model(manifest):
    return _Model()

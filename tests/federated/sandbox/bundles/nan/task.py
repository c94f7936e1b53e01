"""Hostile: parameters holding NaN."""

import numpy as np


class _Model:
    def state_dict(self):
        return {"weight": np.full((1, 30), np.nan, dtype=np.float32), "bias": np.zeros(1, dtype=np.float32)}


def build_model(manifest):
    return _Model()

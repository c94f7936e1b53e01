"""Hostile: smuggles text out as an array of strings."""

import numpy as np


class _Model:
    def state_dict(self):
        return {"weight": np.array(["the pseudonym key is ..."]), "bias": np.zeros(1, dtype=np.float32)}


def build_model(manifest):
    return _Model()

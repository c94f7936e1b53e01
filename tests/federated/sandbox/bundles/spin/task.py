"""Hostile: spins forever in build_model (killed by the call, wall-clock or CPU-time limit)."""


def build_model(manifest):
    n = 0
    while True:
        n += 1

"""Device check: what only a machine with a CUDA GPU can prove. Not part of the test suite (the pinned torch is the
CPU wheel, so CI never has CUDA); run it by hand on a GPU machine with a CUDA build of torch:

    python benchmarks/device_check.py          # exit 0: passed; 1: failed; 3: no CUDA device here (nothing checked)

Checks: the lesion CNN bundle trains on the device ``engine.device_for()`` picks (CUDA when present), its
parameters live there after training, and one epoch's loss is finite. Moved here from
tests/federated/test_local_training.py, where it could never run (issue 17).
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import torch

from incisive.federated import engine
from incisive.federated.bundle import bundle_digest, load_task, shipped_bundle

NO_DEVICE = 3


def check_cnn_on_cuda() -> None:
    path = shipped_bundle("lesion-cnn")
    manifest = json.loads((path / "manifest.json").read_text())
    task = load_task(path, bundle_digest(path))
    model = task.build_model(manifest)
    x = np.random.default_rng(0).random((8, 1, 32, 32), dtype=np.float32)
    y = np.array([0, 1] * 4, dtype=np.float32)
    device = engine.device_for()
    assert device.type == "cuda", f"engine.device_for() chose {device.type} on a machine with CUDA"
    out = engine.train(model, x, y, epochs=1, lr=0.01, batch_size=4, device=device)
    assert next(model.parameters()).device.type == "cuda", "the model's parameters are not on the GPU"
    loss = out.get("loss")
    assert loss is None or math.isfinite(float(loss)), f"loss {loss}"


def main() -> int:
    if not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__}): nothing checked", file=sys.stderr)
        return NO_DEVICE
    try:
        check_cnn_on_cuda()
    except AssertionError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"passed on {torch.cuda.get_device_name(0)} (torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

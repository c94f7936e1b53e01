"""lesion-cnn: a small CNN (MONAI blocks) classifying a series' central slices for a lesion.

Pixels come from the declared modalities' series, as arrays the node wrote into the sandbox (through the
:class:`incisive.federated.task.DataSource` it passes) and preprocessed with MONAI transforms (channel
first, intensity scaling per slice, resize). The label is the patient's clinical ``lesion`` label.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.networks.blocks import Convolution
from monai.transforms import Compose, EnsureChannelFirst, Resize, ScaleIntensity
from torch import nn

from incisive.federated.task import Dataset, DataSource


def build_model(manifest: dict[str, Any]) -> nn.Module:
    c1, c2 = manifest["params"]["channels"]
    return nn.Sequential(
        Convolution(spatial_dims=2, in_channels=1, out_channels=c1, kernel_size=3, act="RELU", norm=None),
        nn.MaxPool2d(2),
        Convolution(spatial_dims=2, in_channels=c1, out_channels=c2, kernel_size=3, act="RELU", norm=None),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(c2, 1),
    )


def preprocess(manifest: dict[str, Any]) -> Compose:
    size = int(manifest["params"]["image_size"])
    return Compose([EnsureChannelFirst(channel_dim="no_channel"), ScaleIntensity(), Resize((size, size))])


def central(items: list[Any], fraction: float) -> list[Any]:
    n = len(items)
    lo = int(n * (1 - fraction) / 2)
    return items[lo:max(lo + 1, n - lo)]


def load_data(source: DataSource, manifest: dict[str, Any], split: str) -> Dataset:
    p = manifest["params"]
    labels = source.patient_labels(manifest["inputs"]["label"])
    tf = preprocess(manifest)
    xs, ys, keys = [], [], []
    for row, series, instances in source.series_instances(manifest["inputs"]["modalities"]):
        if row not in labels:
            continue
        if split != "all" and source.split(row) != split:
            continue
        for instance, key in central(instances, float(p["central_fraction"])):
            img = source.read_pixels(key)
            if img.ndim != 2:
                continue
            xs.append(np.asarray(tf(img), dtype=np.float32))
            ys.append(labels[row])
            keys.append(f"{series}/{instance}")
    size = int(p["image_size"])
    x = np.stack(xs) if xs else np.zeros((0, 1, size, size), dtype=np.float32)
    return Dataset(x, np.asarray(ys, dtype=np.float32), keys)

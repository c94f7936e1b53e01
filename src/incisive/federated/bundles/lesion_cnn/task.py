"""lesion-cnn: a small CNN (MONAI blocks) classifying a series' central slices for a lesion.

Pixels are read from the node's object store (de-identified DICOM, through the
:class:`incisive.federated.task.DataSource` the node passes) and preprocessed with MONAI transforms (channel
first, intensity scaling per slice, resize). The label is the patient's clinical ``lesion`` label.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.networks.blocks import Convolution
from monai.transforms import Compose, EnsureChannelFirst, Resize, ScaleIntensity
from torch import nn

from incisive.federated.task import Dataset, DataSource, split_of


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
    for pseudonym, series_uid, instances in source.series_instances(manifest["inputs"]["modalities"]):
        if pseudonym not in labels:
            continue
        if split != "all" and split_of(pseudonym, float(p["test_fraction"])) != split:
            continue
        for sop_uid, digest in central(instances, float(p["central_fraction"])):
            img = source.read_pixels(digest)
            if img.ndim != 2:
                continue
            xs.append(np.asarray(tf(img), dtype=np.float32))
            ys.append(labels[pseudonym])
            keys.append(f"{series_uid}/{sop_uid}")
    size = int(p["image_size"])
    x = np.stack(xs) if xs else np.zeros((0, 1, size, size), dtype=np.float32)
    return Dataset(x, np.asarray(ys, dtype=np.float32), keys)

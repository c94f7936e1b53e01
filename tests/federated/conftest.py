"""Fixtures: nodes holding parts of scikit-learn's breast-cancer set, a workspace with the shipped bundles."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from incisive.federated import partition
from incisive.federated.bundle import RegisteredBundle, shipped_bundle
from incisive.federated.service import Workspace
from incisive.node.fl import approval
from incisive.node.fl.data import NodeData
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical

MakeNodes = Callable[[int, str, int], dict[str, Node]]


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture
def tabular(workspace: Workspace) -> RegisteredBundle:
    return workspace.registry.register(shipped_bundle("tabular-risk"), "tabular-risk", "1")


@pytest.fixture
def make_nodes(tmp_path: Path) -> MakeNodes:
    created: list[Node] = []

    def make(parts: int, scheme: str, seed: int = 1) -> dict[str, Node]:
        x, y, names = partition.breast_cancer()
        out = {}
        for i, idx in enumerate(partition.partition(y, parts, scheme, seed=seed)):
            node = Node.init(tmp_path / f"node-{i}", provider=f"Hospital {chr(65 + i)}")
            import_clinical(node, partition.write_csv(tmp_path / f"part-{i}.csv", x, y, names, idx, f"P{i}-"))
            out[f"hospital-{chr(97 + i)}"] = node
            created.append(node)
        return out

    yield make  # type: ignore[misc]
    for n in created:
        n.catalogue.dispose()


def approve_all(nodes: dict[str, Node], bundle: RegisteredBundle) -> None:
    for n in nodes.values():
        approval.approve(n.home, bundle)


def load_cohort(node: Node, cohort: Path) -> None:
    """The synthetic cohort's images and clinical table at a node (the name column dropped, as the import asks)."""
    from incisive.node.ingest.dicom_import import import_dicom

    import_dicom(node, cohort / "dicom", workers=1)
    import_clinical(node, cohort / "clinical.csv", drop=["patient_name"])


def quick_lesion_weights(bundle_path: Path, digest: str, node_home: Path, cohort: Path) -> list[np.ndarray]:
    """lesion-cnn trained for 3 epochs on the whole cohort at one node: a trained model for inference tests."""
    import torch

    from incisive.federated import engine
    from incisive.federated.bundle import load_task

    node = Node.init(node_home, provider="Training Hospital")
    load_cohort(node, cohort)
    manifest = json.loads((bundle_path / "manifest.json").read_text())
    task = load_task(bundle_path, digest)
    data = task.load_data(NodeData(node), manifest, "all")
    node.catalogue.dispose()
    torch.manual_seed(0)
    model = task.build_model(manifest)
    engine.train(model, data.x, data.y, epochs=3, lr=0.003, batch_size=16)
    return engine.get_weights(model)

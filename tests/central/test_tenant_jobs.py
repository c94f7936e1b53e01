"""A tenant's jobs read its sealed store: what an image bundle gets in its sandbox from a Central Node tenant is
exactly what it gets from a plain node holding the same cohort (pixel arrays decrypted by the trusted runtime,
never a DICOM file, never a key), and a tenant's job never reads another tenant's objects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from incisive.central.home import Central
from incisive.federated.bundle import shipped_bundle
from incisive.node.fl.data import NodeData
from incisive.node.fl.materialise import materialise
from incisive.node.home import Node
from tests.central.conftest import fill_tenant
from tests.federated.conftest import load_cohort


def _pixels(root: Path) -> list[str]:
    return sorted(hashlib.sha256(np.load(p).tobytes()).hexdigest() for p in (root / "pixels").glob("*.npy"))


def test_image_inputs_from_a_tenant_equal_those_from_a_plain_node(central: Central, cohort: Path,
                                                                  tmp_path: Path) -> None:
    from incisive.central.tenants import add_tenant

    manifest = json.loads((shipped_bundle("lesion-cnn") / "manifest.json").read_text())
    plain = Node.init(tmp_path / "plain", provider="Plain Hospital")
    load_cohort(plain, cohort)
    materialise(NodeData(plain), manifest, tmp_path / "plain-in")
    plain.catalogue.dispose()

    d, _ = add_tenant(central, "Hospital D", "IT", "it@d.example")
    e, _ = add_tenant(central, "Hospital E", "IT", "it@e.example")
    tenant = fill_tenant(central, d.id, cohort)
    other = central.tenant_node(e.id)  # empty: it must not see D's series
    imap = materialise(NodeData(tenant), manifest, tmp_path / "tenant-in")
    assert len(imap.items) > 0
    assert _pixels(tmp_path / "tenant-in") == _pixels(tmp_path / "plain-in")
    assert not list((tmp_path / "tenant-in").rglob("*.dcm"))
    empty = materialise(NodeData(other), manifest, tmp_path / "other-in")
    assert empty.items == [] and _pixels(tmp_path / "other-in") == []

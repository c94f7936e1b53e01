"""Declared inputs only (issue 15 item 2): what the node writes into a job's sandbox input directory.

Nothing in it names a patient or an object: no pseudonym, no UID, no object hash, no field the manifest does not
declare or the policy withholds; rows are random per-job ids whose split the node computed from the pseudonym,
and a bundle reading it through FileSource gets the same data (same order, same split) as from the catalogue.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sqlalchemy import select

from incisive.federated.bundle import load_task, shipped_bundle
from incisive.federated.task import FileSource, split_of
from incisive.node.catalogue.models import ClinicalRecord, Instance, Patient, Series, Study
from incisive.node.fl.data import NodeData
from incisive.node.fl.materialise import materialise
from incisive.node.home import Node
from tests.federated.conftest import MakeNodes, load_cohort


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def _identifiers(node: Node) -> set[str]:
    with node.catalogue.session() as s:
        out = {str(v) for (v,) in s.execute(select(Patient.pseudonym))}
        out |= {str(v) for (v,) in s.execute(select(ClinicalRecord.pseudonym))}
        out |= {str(v) for (v,) in s.execute(select(Study.study_uid))}
        out |= {str(v) for (v,) in s.execute(select(Series.series_uid))}
        for sop, digest in s.execute(select(Instance.sop_uid, Instance.object_hash)):
            out |= {str(sop), str(digest)}
    return out


def test_tabular_inputs_hold_declared_numbers_under_random_ids(make_nodes: MakeNodes, tmp_path: Path) -> None:
    node = make_nodes(1, "iid", 1)["hospital-a"]
    path = shipped_bundle("tabular-risk")
    manifest = json.loads((path / "manifest.json").read_text())
    withheld = [manifest["inputs"]["features"][0]]
    imap = materialise(NodeData(node), manifest, tmp_path / "in", withheld=withheld)
    blob = _all_bytes(tmp_path / "in")
    pseudonyms = set(imap.rows.values())
    assert len(pseudonyms) > 100 and pseudonyms <= _identifiers(node)
    leaked = [p for p in _identifiers(node) if p.encode() in blob or p.encode("utf-32-le") in blob]
    assert leaked == []  # numpy stores str arrays as UTF-32: checked in both encodings
    with np.load(tmp_path / "in" / "clinical.npz", allow_pickle=False) as z:
        assert list(z["fields"]) == manifest["inputs"]["features"][1:]  # the withheld field never crosses
        assert list(z["labels"]) == [manifest["inputs"]["label"]]
    source = FileSource(tmp_path / "in")
    for rid, pseudonym in list(imap.rows.items())[:50]:
        assert source.split(rid) == split_of(pseudonym, 0.25) and rid not in pseudonym
    assert (tmp_path / "in").stat().st_mode & 0o777 == 0o700


def test_a_bundle_reads_the_same_data_from_files_as_from_the_catalogue(make_nodes: MakeNodes,
                                                                       tmp_path: Path) -> None:
    node = make_nodes(1, "iid", 2)["hospital-a"]
    path = shipped_bundle("tabular-risk")
    manifest = json.loads((path / "manifest.json").read_text())
    task = load_task(path, "test-declared-inputs")
    materialise(NodeData(node), manifest, tmp_path / "in")
    for split in ("train", "test", "all"):
        direct, caged = task.load_data(NodeData(node), manifest, split), task.load_data(
            FileSource(tmp_path / "in"), manifest, split)
        assert len(direct) > 0 and np.array_equal(direct.x, caged.x) and np.array_equal(direct.y, caged.y)
        assert not set(direct.keys) & set(caged.keys)


def test_image_inputs_are_pixel_arrays_without_headers(sqlite_node: Node, cohort: Path, tmp_path: Path) -> None:
    load_cohort(sqlite_node, cohort)
    path = shipped_bundle("lesion-cnn")
    manifest = json.loads((path / "manifest.json").read_text())
    imap = materialise(NodeData(sqlite_node), manifest, tmp_path / "in")
    root = tmp_path / "in"
    assert not list(root.rglob("*.dcm")) and len(list((root / "pixels").glob("*.npy"))) == len(imap.items) > 0
    blob = _all_bytes(root)
    assert [i for i in _identifiers(sqlite_node) if i.encode() in blob or i.encode("utf-32-le") in blob] == []
    phi = [str(v) for v in json.loads((cohort / "phi_manifest.json").read_text())]
    assert [v for v in phi if len(v) > 3 and v.encode() in blob] == []
    series = json.loads((root / "series.json").read_text())
    assert {s["modality"] for s in series} <= {"CT", "MR"}
    items = json.loads((root / "items.json").read_text())
    assert len(items) == len(imap.items) and all(imap.item(i)[1] is not None for i in range(len(items)))
    task = load_task(path, "test-declared-images")
    direct = task.load_data(NodeData(sqlite_node), manifest, "all")
    caged = task.load_data(FileSource(root), manifest, "all")
    assert len(direct) == len(caged) > 0 and np.allclose(direct.x, caged.x)


def test_inference_series_filter_writes_only_the_requested_series(sqlite_node: Node, cohort: Path,
                                                                  tmp_path: Path) -> None:
    load_cohort(sqlite_node, cohort)
    manifest = json.loads((shipped_bundle("lesion-cnn") / "manifest.json").read_text())
    with sqlite_node.catalogue.session() as s:
        first = str(s.execute(select(Series.series_uid).where(Series.modality == "CT")).scalars().first())
    imap = materialise(NodeData(sqlite_node), manifest, tmp_path / "in", series=[first])
    assert imap.items and {series for _, series, _ in imap.items} == {first}

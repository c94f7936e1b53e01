"""Declared inputs only: the trusted node runtime writes what a bundle's manifest declares into the job's
read-only sandbox input directory, and keeps the map back to pseudonyms and UIDs outside.

What crosses (the layout is documented in :mod:`incisive.federated.task`):

* per patient a random per-job row id, its train/test split (:func:`incisive.federated.task.split_of` of the
  pseudonym, computed here), the declared clinical ``features`` and ``label`` as numbers (NaN when missing or not
  a number: strings never cross, they may carry free text);
* for image bundles, per series of a declared modality a random series id and per instance a random instance id
  with its decoded pixel array (float32 ``.npy``): never the DICOM file, whose header holds the pseudonym and UIDs.

Fields the node's policy withholds are never written, declared or not. The :class:`InputMap` returned stays in the
trusted process: inference maps item indices back to (pseudonym, series uid, sop uid) with it.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from incisive.federated.task import split_of
from incisive.node.fl.data import NodeData


@dataclass(frozen=True)
class Declared:
    """What a manifest's ``inputs`` ask for."""

    fields: list[str]
    labels: list[str]
    modalities: list[str]

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> Declared:
        inputs = manifest.get("inputs") or {}
        label = inputs.get("label")
        return cls(fields=[str(f) for f in inputs.get("features") or []],
                   labels=[str(label)] if label else [],
                   modalities=[str(m) for m in inputs.get("modalities") or []] if manifest.get("kind") == "image"
                   else [])


@dataclass
class InputMap:
    """The trusted side's map from the sandbox's ids back to the node's own keys (never enters the sandbox)."""

    root: Path
    rows: dict[str, str] = field(default_factory=dict)  # row id → pseudonym
    items: list[tuple[str | None, str | None, str | None]] = field(default_factory=list)  # (pseudonym, series, sop)
    splits: dict[str, int] = field(default_factory=lambda: {"train": 0, "test": 0})

    def item(self, index: int) -> tuple[str | None, str | None, str | None]:
        return self.items[index]


def _id(used: set[str]) -> str:
    while True:
        token = secrets.token_hex(8)
        if token not in used:
            used.add(token)
            return token


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def materialise(source: NodeData, manifest: dict[str, Any], root: Path, *, series: list[str] | None = None,
                withheld: tuple[str, ...] | list[str] = ()) -> InputMap:
    """Write the declared inputs of ``manifest`` from ``source`` into ``root`` (created 0700, must not exist)."""
    declared = Declared.of(manifest)
    fields = [f for f in declared.fields if f not in withheld]
    labels = [n for n in declared.labels if n not in withheld]
    test_fraction = float((manifest.get("params") or {}).get("test_fraction", 0.25))
    root.mkdir(mode=0o700, parents=True)
    out = InputMap(root)
    used: set[str] = set()
    row_of: dict[str, str] = {}
    values: list[list[float]] = []
    label_values: list[list[float]] = []

    def row(pseudonym: str, fv: dict[str, Any], lv: dict[str, Any]) -> str:
        rid = _id(used)
        row_of[pseudonym] = rid
        out.rows[rid] = pseudonym
        values.append([_number(fv.get(f)) for f in fields])
        label_values.append([_number(lv.get(n)) for n in labels])
        return rid

    for pseudonym, fv, lv in source.clinical_rows():
        row(pseudonym, fv, lv)
    listed: list[dict[str, Any]] = []
    if declared.modalities:
        (root / "pixels").mkdir(mode=0o700)
        for pseudonym, series_uid, modality, instances in source.series_by_modality(declared.modalities):
            if series and series_uid not in series:
                continue
            rid = row_of.get(pseudonym) or row(pseudonym, {}, {})
            sid, entries = _id(used), []
            for sop_uid, digest in instances:
                iid = _id(used)
                np.save(root / "pixels" / f"{iid}.npy", source.read_pixels(digest), allow_pickle=False)
                entries.append([iid, iid])
                out.items.append((None, series_uid, sop_uid))
            listed.append({"row": rid, "series": sid, "modality": modality, "instances": entries})
        _write_json(root / "series.json", listed)
    else:
        out.items = [(p, None, None) for p in out.rows.values()] if not series else []
    ids = list(out.rows)
    split = [split_of(out.rows[r], test_fraction) for r in ids]
    for s in split:
        out.splits[s] += 1
    np.savez(root / "clinical.npz", ids=np.asarray(ids, dtype=str), split=np.asarray(split, dtype=str),
             fields=np.asarray(fields, dtype=str), labels=np.asarray(labels, dtype=str),
             field_values=np.asarray(values, dtype=np.float64).reshape(len(ids), len(fields)),
             label_values=np.asarray(label_values, dtype=np.float64).reshape(len(ids), len(labels)))
    item_ids = ([f"{s['series']}/{i}" for s in listed for i, _ in s["instances"]] if declared.modalities
                else list(ids) if not series else [])
    _write_json(root / "items.json", item_ids)
    return out


def _write_json(path: Path, data: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)

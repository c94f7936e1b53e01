"""Which attributes an IOD requires (PS3.3 attribute Types), so de-identification never breaks an object.

PS3.3 gives every attribute of a module a Type: 1 (present with a value), 2 (present, may be empty), 3
(optional); 1C/2C the same when a condition holds, which for an attribute already present we assume it does.
PS3.15 E.1.1 asks a de-identifier to keep those rules: a Type 1 attribute it must change gets a dummy value,
a Type 2 one is emptied, only a Type 3 one may be removed.

The module tables come from the DICOM standard as parsed and shipped by highdicom (``_standard/*.json``,
22 MB, about a second to load). We keep a compact derivative in ``data/iod_requirements.json.gz``: per
module, the Type 1/1C/2/2C attributes keyed by (parent sequence tag, tag), 0 for the top level.
Keying by the parent instead of the whole path is a deliberate approximation: where two paths share a parent
and keyword, the stricter Type wins, which at worst gives an optional attribute a dummy value instead of
removing it (dummy values carry nothing). ``build()`` regenerates the file; a test checks it matches the
installed highdicom.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources
from typing import Any, Final

from pydicom.datadict import tag_for_keyword

DATA_FILE: Final = "iod_requirements.json.gz"
REQUIRED: Final = "1"  # a value must stay: dummy when it has to change
PRESENT: Final = "2"  # the attribute must stay: empty when it has to change
_RANK: Final = {"1": 0, "1C": 0, "2": 1, "2C": 1}


def build() -> dict[str, Any]:
    """The compact table, from the standard as shipped by highdicom (slow: for the generator and its test)."""
    from highdicom._standard_utils import (  # private, but only read here, at build time
        get_iod_module_map,
        get_module_attribute_map,
        get_sop_class_iod_map,
    )

    modules: dict[str, list[list[int | str]]] = {}
    for name, attributes in get_module_attribute_map().items():
        strictest: dict[tuple[int, int], str] = {}
        for attribute in attributes:
            kind = attribute["type"]
            tag = _tag(attribute["keyword"])
            parent = _tag(attribute["path"][-1]) if attribute["path"] else 0
            if kind not in _RANK or tag < 0 or parent < 0:
                continue  # optional, or a keyword this pydicom does not know
            level = REQUIRED if _RANK[kind] == 0 else PRESENT
            if strictest.get((parent, tag)) != REQUIRED:
                strictest[(parent, tag)] = level
        modules[name] = sorted([parent, tag, level] for (parent, tag), level in strictest.items())
    return {
        "source": "highdicom _standard (DICOM PS3.3 module tables)",
        "modules": modules,
        "iods": {iod: sorted(m["key"] for m in mods) for iod, mods in get_iod_module_map().items()},
        "sop_classes": dict(sorted(get_sop_class_iod_map().items())),
    }


def encode(table: dict[str, Any]) -> bytes:
    """Deterministic bytes of the table file (gzip header without a timestamp)."""
    return gzip.compress(json.dumps(table, separators=(",", ":"), sort_keys=True).encode(), mtime=0)


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    data = resources.files("incisive.node.deid").joinpath("data", DATA_FILE).read_bytes()
    table: dict[str, Any] = json.loads(gzip.decompress(data))
    return table


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    return int(tag) if tag is not None else -1


@lru_cache(maxsize=256)
def requirements(sop_class_uid: str) -> dict[tuple[int, int], str]:
    """(parent sequence tag or 0, tag) -> ``REQUIRED`` | ``PRESENT`` for the IOD of ``sop_class_uid``.

    An unknown SOP class (private, retired) gets the union of all IODs: the safest reading for validity, and
    removal stays possible for everything no IOD requires.
    """
    table = _table()
    iod = table["sop_classes"].get(sop_class_uid)
    names = table["iods"][iod] if iod else sorted(table["modules"])
    merged: dict[tuple[int, int], str] = {}
    for name in names:
        for parent, tag, level in table["modules"].get(name, ()):
            key = (int(parent), int(tag))
            if merged.get(key) != REQUIRED:
                merged[key] = level
    return merged


def iod_name(sop_class_uid: str) -> str | None:
    """The IOD's name in the standard's module tables (``ct-image``), or None for an unknown SOP class."""
    name = _table()["sop_classes"].get(sop_class_uid)
    return str(name) if name else None


def main() -> None:  # pragma: no cover - run by hand after a highdicom upgrade
    path = resources.files("incisive.node.deid").joinpath("data", DATA_FILE)
    with resources.as_file(path) as target:
        target.write_bytes(encode(build()))
        print(f"wrote {target}")


if __name__ == "__main__":  # pragma: no cover
    main()

"""Proof over the whole dictionary (issue 12, item 4): no marker survives import or STOW unless retained.

The corpus (:mod:`tests.node.deid.marker_corpus`) puts a unique marker in every public attribute each IOD
family can carry. Each instance goes through a real folder import and, on another node, through STOW-RS on
the node's DICOMweb app; then every stored object (store and quarantine) is searched, as Part 10 bytes, as a
decoded dataset (every sequence, every item) and as WADO-RS ``/metadata``, for every marker, case-insensitive
and with separators inside the token tolerated. A marker may survive only in its own attribute, and only when
the engine's retain rules keep that attribute: ``incisive.node.deid.retain.RETAIN`` with action K (C entries go
through the cleaner, which must drop the token), an attribute kept by its kind (``kept_by_kind``), or a K entry
of Retain Patient Characteristics. Private attributes never survive (no safe private list is configured).
"""

from __future__ import annotations

import io
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from incisive.node.api.app import create_app
from incisive.node.api.tokens import create_token
from incisive.node.deid.iod import REQUIRED, requirements
from incisive.node.deid.retain import RETAIN, kept_by_kind
from incisive.node.deid.table import RETAIN_PATIENT_CHARACTERISTICS
from incisive.node.home import Node
from incisive.node.ingest.dicom_import import import_dicom
from tests.node.deid.marker_corpus import (
    DA_RE,
    DT_RE,
    IODS,
    PHRASES,
    TEXT_VRS,
    TM_RE,
    TOKEN_RE,
    UID_RE,
    VENDOR,
    CorpusItem,
    Marker,
    build_corpus,
)

BOUNDARY = "marker-corpus-boundary"
_DIGITS_RE = re.compile(rb"(?<![\d])(\d{6})(?!\d)")  # a token whose "MK" a cleaner dropped
_PHRASE_RE = {p: re.compile(rf"(?<![A-Za-z0-9]){re.escape(p)}(?![A-Za-z0-9])", re.IGNORECASE) for p in PHRASES}


@pytest.fixture(scope="module")
def corpus() -> list[CorpusItem]:
    return build_corpus()


@dataclass(frozen=True)
class Hit:
    """A marker found in a stored object: which attribute it came from and where it was found."""

    item: str
    marker: Marker
    found: str  # sequence path / keyword (or tag) of the element that holds it, or the search it came from
    found_keyword: str | None  # keyword of that element (None for bytes or JSON hits)


# -- what the retain rules allow -----------------------------------------------------------------------------
def retained(marker: Marker, sop_class_uid: str) -> tuple[str, str] | None:
    """(kind, reason) when the engine's rules keep the marker's attribute; None when it must not survive."""
    if marker.kind == "private":
        return None
    entry = RETAIN.get(marker.keyword)
    if entry is not None:
        return ("K", entry[1]) if entry[0] == "K" else None  # C: the cleaner must drop the token
    characteristic = RETAIN_PATIENT_CHARACTERISTICS.get(marker.keyword)
    if characteristic is not None:
        return ("K", "Retain Patient Characteristics") if characteristic == "K" else None
    tag = tag_for_keyword(marker.keyword)
    parent = tag_for_keyword(marker.path[-1]) if marker.path else 0
    level = requirements(sop_class_uid).get((int(parent or 0), int(tag or 0)))
    required = level == REQUIRED  # Type 1/1C there: a Type 2 code string is emptied unless retained
    reason = kept_by_kind(marker.keyword, marker.vr, required)
    return ("kind", reason) if reason else None


def allowed(hit: Hit, sop_class_uid: str) -> bool:
    if hit.found_keyword != hit.marker.keyword:
        return False  # moved to another attribute, or only found in bytes the dataset walk did not see
    return retained(hit.marker, sop_class_uid) is not None


# -- searching stored objects ----------------------------------------------------------------------------------
class Index:
    """Every marker of the corpus by the string a search finds."""

    def __init__(self, corpus: list[CorpusItem]) -> None:
        self.by_value: dict[bytes, tuple[str, Marker]] = {}
        self.phrases: dict[str, list[tuple[str, Marker]]] = defaultdict(list)
        for item in corpus:
            for m in item.markers:
                if m.kind == "phrase":
                    self.phrases[m.value.lower()].append((item.name, m))
                else:
                    key = m.value[2:].encode() if m.value.startswith("MK") else m.value.encode()
                    assert key not in self.by_value, m
                    self.by_value[key] = (item.name, m)

    def find(self, data: bytes, text: bool = False) -> Iterator[tuple[str, Marker]]:
        """Markers in ``data``; ``text``: a text value, where a token's digits alone also count (cleaned)."""
        for match in (_DIGITS_RE if text else TOKEN_RE).finditer(data):
            if match.group(1) in self.by_value:
                yield self.by_value[match.group(1)]
        for pattern in (UID_RE, DA_RE, DT_RE, TM_RE):
            for found in pattern.findall(data):
                if found in self.by_value:
                    yield self.by_value[found]


def _elements(ds: Dataset, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str, str, Any, int]]:
    for elem in ds:
        name = elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _elements(item, (*path, name))
            continue
        yield path, name, elem.VR, elem.value, int(elem.tag)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return b"\\".join(_as_bytes(v) for v in value)
    return str(value).encode("utf-8", "replace")


def search(index: Index, owner: str, ds: Dataset, data: bytes,
           metadata: list[dict[str, Any]] | None) -> tuple[list[Hit], int]:
    """Markers and report fragments in one stored object of corpus item ``owner``; also its private elements."""
    hits: list[Hit] = []
    seen: set[str] = set()
    private = 0
    for dataset in (ds.file_meta, ds):
        for path, keyword, vr, value, tag in _elements(dataset):
            if (tag >> 16) & 1:
                private += 1
            raw = _as_bytes(value)
            found = "/".join((*path, keyword))
            for item, m in index.find(raw, text=vr in TEXT_VRS):
                hits.append(Hit(item, m, found, keyword))
                seen.add(m.value)
            if vr in ("UI", "OB", "OW", "UN") or not raw:
                continue
            text = raw.decode("utf-8", "replace")
            for phrase, pattern in _PHRASE_RE.items():
                if pattern.search(text):
                    # the owner's attribute this fragment was written into with this keyword, if any
                    origins = [o for i, o in index.phrases[phrase.lower()] if i == owner]
                    if origins:
                        m = next((o for o in origins if o.keyword == keyword), origins[0])
                        hits.append(Hit(owner, m, found, keyword))
    extra = [(item, m, "Part 10 bytes") for item, m in index.find(data)]
    if metadata is not None:
        extra += [(item, m, "WADO-RS metadata") for item, m in index.find(repr(metadata).encode())]
    for item, m, where in extra:
        if m.value not in seen:
            hits.append(Hit(item, m, where, None))
            seen.add(m.value)
    return hits, private


# -- the two routes in -------------------------------------------------------------------------------------------
def _write(corpus: list[CorpusItem], folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True)
    out = {}
    for i, item in enumerate(corpus):
        buffer = io.BytesIO()
        item.dataset.save_as(buffer, enforce_file_format=True)
        out[item.name] = buffer.getvalue()
        (folder / f"{i:02d}.dcm").write_bytes(out[item.name])
    return out


def _import(node: Node, corpus: list[CorpusItem], folder: Path) -> list[str]:
    _write(corpus, folder)
    report = import_dicom(node, folder, workers=1)
    return [f"{p['file']}: {p['outcome']}: {p['reason']}" for p in report.problems if p["outcome"] == "rejected"]


def _stow(node: Node, corpus: list[CorpusItem], folder: Path) -> list[str]:
    files = _write(corpus, folder)
    client = TestClient(create_app(node))
    auth = {"Authorization": f"Bearer {create_token(node, 'uploader', 'tests')}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
    problems = []
    for name, data in files.items():  # one request each: STOW is all-or-nothing per request
        body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
                + f"\r\n--{BOUNDARY}--\r\n".encode())
        response = client.post("/dicom-web/studies", content=body, headers=auth)
        if response.status_code not in (200, 202):
            problems.append(f"{name}: HTTP {response.status_code}: {response.text[:300]}")
    return problems


def _metadata(node: Node, study_uids: set[str]) -> dict[str, list[dict[str, Any]]]:
    client = TestClient(create_app(node))
    auth = {"Authorization": f"Bearer {create_token(node, 'viewer', 'tests')}"}
    out: dict[str, list[dict[str, Any]]] = {}
    for study in sorted(study_uids):
        response = client.get(f"/dicom-web/studies/{study}/metadata", headers=auth)
        assert response.status_code == 200, response.text[:300]
        for doc in response.json():
            out[doc["00080018"]["Value"][0]] = [doc]
    return out


def _coverage(corpus: list[CorpusItem]) -> dict[str, int]:
    """Public attributes filled with a marker, per IOD (each place in each sequence counts)."""
    return {item.name: len(item.public_markers()) for item in corpus}


def _keywords(corpus: list[CorpusItem]) -> dict[str, int]:
    """Distinct public keywords carrying a marker, per IOD."""
    return {item.name: len({m.keyword for m in item.public_markers()}) for item in corpus}


def _exercised(corpus: list[CorpusItem]) -> list[tuple[str, str, str, str]]:
    """(keyword, VR, kind, reason) of every retain rule that some corpus attribute met."""
    rows: set[tuple[str, str, str, str]] = set()
    for item in corpus:
        for m in item.public_markers():
            rule = retained(m, item.sop_class_uid)
            if rule is not None:
                rows.add((m.keyword, m.vr, *rule))
    return sorted(rows)


def _group(hits: list[Hit]) -> list[str]:
    """One line per surviving attribute (keyword, VR): how many markers, in how many paths and IODs."""
    markers: dict[tuple[str, str], set[Marker]] = defaultdict(set)
    paths: dict[tuple[str, str], set[str]] = defaultdict(set)
    items: dict[tuple[str, str], set[str]] = defaultdict(set)
    moved: dict[tuple[str, str], set[str]] = defaultdict(set)
    for h in hits:
        key = (h.marker.keyword, f"{h.marker.vr}{' report fragment' if h.marker.kind == 'phrase' else ''}")
        markers[key].add(h.marker)
        paths[key].add("/".join(h.marker.path) or "(top level)")
        items[key].add(h.item)
        if h.found_keyword != h.marker.keyword:
            moved[key].add(h.found)
    lines = []
    for key in sorted(markers, key=lambda k: (-len(markers[k]), k)):
        example = sorted(paths[key], key=len)[:3]
        line = (f"  {key[0]} {key[1]}: {len(markers[key])} marker(s), {len(paths[key])} path(s), "
                f"{len(items[key])} IOD(s), e.g. {', '.join(example)}")
        if moved[key]:
            line += f"; found elsewhere: {', '.join(sorted(moved[key])[:3])}"
        lines.append(line)
    return lines


@pytest.mark.parametrize("route", ["import", "stow"])
def test_no_marker_survives(route: str, sqlite_node: Node, corpus: list[CorpusItem], tmp_path: Path,
                            record_property: Any) -> None:
    node = sqlite_node
    coverage, keywords = _coverage(corpus), _keywords(corpus)
    exercised = _exercised(corpus)
    for name, n in coverage.items():
        record_property(f"attributes_covered[{name}]", n)
        record_property(f"keywords_covered[{name}]", keywords[name])
    record_property("retain_rules_exercised", len(exercised))
    print(f"\nmarker corpus, attributes covered per IOD: {coverage}; distinct keywords: {keywords}")
    print(f"retain rules exercised ({len(exercised)}): keyword, VR, kind, reason")
    for row in exercised:
        print("  " + " | ".join(row))

    rejected = (_import if route == "import" else _stow)(node, corpus, tmp_path / "in")
    assert not rejected, f"{route}: corpus instances not stored, so nothing is proven: {rejected}"

    stored = [(d, node.store.get(d), True) for d in node.store.iter_digests()]
    stored += [(d, node.quarantine.get(d), False) for d in node.quarantine.iter_digests()]
    decoded = [(d, pydicom.dcmread(io.BytesIO(data)), data, served) for d, data, served in stored]
    sop_classes = Counter(str(ds.SOPClassUID) for _, ds, _, _ in decoded)
    assert sop_classes == Counter(item.sop_class_uid for item in corpus), f"{route}: stored {sop_classes}"
    metadata = _metadata(node, {str(ds.StudyInstanceUID) for _, ds, _, served in decoded if served})
    assert len(metadata) == sum(served for *_, served in decoded)

    index = Index(corpus)
    by_name = {item.name: item for item in corpus}
    owners = {(item.sop_class_uid, item.instance_number): item.name for item in corpus}
    survivors: list[Hit] = []
    kept: list[Hit] = []
    private_left: dict[str, int] = {}
    for digest, ds, data, _ in decoded:
        owner = owners.get((str(ds.SOPClassUID), int(ds.get("InstanceNumber") or 0)), "")
        assert owner, f"{route}: object {digest[:12]} is no corpus instance (SOP Class or InstanceNumber changed)"
        hits, private = search(index, owner, ds, data, metadata.get(str(ds.SOPInstanceUID)))
        if private:
            private_left[f"{ds.SOPClassUID} {digest[:12]}"] = private
        for h in hits:
            (kept if allowed(h, by_name[h.item].sop_class_uid) else survivors).append(h)

    total = sum(coverage.values())
    lost = {h.marker for h in survivors}
    by_vr = Counter(m.vr for m in lost)
    message = (f"{route}: {len(lost)} markers survive outside the retain rules, in "
               f"{len({m.keyword for m in lost})} attributes ({len({h.marker for h in kept})} more survive where "
               f"the rules retain them) over {total} attributes covered {coverage} (distinct keywords {keywords}); "
               f"by VR {dict(by_vr.most_common())}; "
               f"private elements left: {private_left}\nsurviving, by attribute:\n" + "\n".join(_group(survivors)))
    record_property("markers_surviving", len({h.marker for h in survivors}))
    print(message)
    assert not survivors and not private_left, message


def test_marker_corpus_covers_the_dictionary(corpus: list[CorpusItem], record_property: Any) -> None:
    names = [item.name for item in corpus]
    assert names == [*IODS, VENDOR]
    coverage = _coverage(corpus)
    for name, n in coverage.items():
        record_property(f"attributes_covered[{name}]", n)
    keywords = {item.name: {m.keyword for m in item.public_markers()} for item in corpus}
    assert all(n >= 300 for n in coverage.values()), coverage
    assert all(len(k) >= 200 for k in keywords.values()), {n: len(k) for n, k in keywords.items()}
    for item in corpus:
        vrs = {m.vr for m in item.public_markers()}
        assert {"CS", "LO", "SH", "PN", "DA", "DT", "TM", "UI"} <= vrs, (item.name, vrs)
        for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                        "PatientBirthDateInAlternativeCalendar", "CommentsOnTheScheduledProcedureStep",
                        "SecondaryReviewerName"):
            assert any(m.keyword == keyword for m in item.markers), (item.name, keyword)
        assert any(m.path == ("ScheduledProcedureStepSequence",) and m.keyword == "CommentsOnTheScheduledProcedureStep"
                   for m in item.markers), item.name
        nested = [m for m in item.public_markers() if len(m.path) >= 2]
        assert len(nested) >= 50, (item.name, len(nested))
        assert str(item.dataset.SOPClassUID) == item.sop_class_uid
    sr = next(item for item in corpus if item.name == "Comprehensive SR")
    for value_type in ("CONTAINER", "TEXT", "PNAME", "DATE", "DATETIME", "TIME", "UIDREF", "CODE", "NUM", "IMAGE"):
        assert sr.sr_value_types[value_type] >= 1, value_type
    sr_keywords = {m.keyword for m in sr.markers if m.path[:1] == ("ContentSequence",)}
    assert {"TextValue", "PersonName", "Date", "DateTime", "Time", "UID", "ReferencedSOPInstanceUID"} <= sr_keywords
    assert any(m.kind == "phrase" and m.keyword == "TextValue" for m in sr.markers)
    vendor = corpus[-1]
    assert len(vendor.private_markers()) >= 200
    assert len({m.keyword.split(":")[0] for m in vendor.private_markers()}) >= 10
    # every marker is distinct, and every instance can be written and read back
    values = [m.value for item in corpus for m in item.markers if m.kind != "phrase"]
    assert len(values) == len(set(values))
    for item in corpus:
        buffer = io.BytesIO()
        item.dataset.save_as(buffer, enforce_file_format=True)
        again = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
        assert again.SOPInstanceUID == item.dataset.SOPInstanceUID
        if "PixelData" in item.dataset:
            assert len(again.PixelData) == len(item.dataset.PixelData)

"""``node fsck``: reconcile the object store with the catalogue and verify every checksum.

Finds: catalogue rows whose object is missing, objects whose bytes no longer match their address (flipped
bit, truncation; on an encrypted store also an object that does not open: a failed tag or content hash, a key
the ring no longer holds), objects no row points at (orphans, e.g. after a crash between fsync and commit) and
partial writes in ``tmp/``. ``repair`` moves corrupt objects aside to ``<store>/corrupt/`` and drops their
rows (re-importing the source restores them), drops rows of missing objects, re-catalogues orphans that are
our own de-identified instances, and clears ``tmp/``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pydicom import dcmread
from sqlalchemy import delete, func, select

from incisive.common.logging import get_logger
from incisive.node.catalogue.models import Instance, QuarantineItem, Series, Study
from incisive.node.catalogue.writer import CatalogueWriter
from incisive.node.home import Node
from incisive.node.ingest.dicom_file import facts
from incisive.node.store import ObjectStore

log = get_logger("fsck")


@dataclass
class FsckReport:
    rows_checked: int = 0
    objects_checked: int = 0
    missing: list[str] = field(default_factory=list)  # object hashes referenced but absent
    corrupt: list[str] = field(default_factory=list)  # object hashes whose bytes changed
    orphans: list[str] = field(default_factory=list)  # objects with no catalogue row
    partial_writes: int = 0
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.corrupt or self.orphans or self.partial_writes)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}


def fsck(node: Node, repair: bool = False, progress: Callable[[int, int], None] | None = None) -> FsckReport:
    report = FsckReport()
    with node.catalogue.session() as s:
        refs = {d for (d,) in s.execute(select(Instance.object_hash))}
        qrefs = {d for (d,) in s.execute(select(QuarantineItem.object_hash))}
        report.rows_checked = (s.scalar(select(func.count(Instance.id))) or 0) + len(qrefs)
    total = len(refs) + len(qrefs)
    done = 0
    for store, wanted in ((node.store, refs), (node.quarantine, qrefs)):
        for digest in sorted(wanted):
            if not store.path(digest).is_file():
                report.missing.append(digest)
            elif not store.verify_content(digest):  # encrypted store: + every tag and the content hash
                report.corrupt.append(digest)
            report.objects_checked += 1
            done += 1
            if progress and done % 64 == 0:
                progress(done, total)
        report.orphans.extend(d for d in store.iter_digests() if d not in wanted)
    report.partial_writes = sum(1 for _ in node.store.tmp.glob("*.part")) if node.store.tmp.is_dir() else 0
    if progress:
        progress(total, total)
    if repair and not report.clean:
        report.repaired = _repair(node, report)
    log.info("fsck: rows=%d objects=%d missing=%d corrupt=%d orphans=%d partial=%d repair=%s",
             report.rows_checked, report.objects_checked, len(report.missing), len(report.corrupt),
             len(report.orphans), report.partial_writes, repair)
    return report


def _move_aside(store: ObjectStore, digest: str) -> None:
    target = store.root / "corrupt"
    target.mkdir(exist_ok=True)
    os.replace(store.path(digest), target / digest)


def _repair(node: Node, report: FsckReport) -> dict[str, int]:
    done = {"rows_dropped": 0, "moved_aside": 0, "recatalogued": 0, "orphans_removed": 0, "partial_removed": 0}
    bad = set(report.missing) | set(report.corrupt)
    with node.catalogue.session() as s:
        for digest in report.corrupt:
            for store in (node.store, node.quarantine):
                if store.path(digest).is_file():
                    _move_aside(store, digest)
                    done["moved_aside"] += 1
        if bad:
            for model in (Instance, QuarantineItem):
                result = s.execute(delete(model).where(model.object_hash.in_(bad)))
                done["rows_dropped"] += getattr(result, "rowcount", 0) or 0
            s.execute(delete(Series).where(~Series.id.in_(select(Instance.series_id).distinct())))
            s.execute(delete(Study).where(~Study.id.in_(select(Series.study_id).distinct())))
        writer = CatalogueWriter(s)
        for digest in report.orphans:
            store = node.store if node.store.path(digest).is_file() else node.quarantine
            if store is node.store and _recatalogue(writer, store, digest):
                done["recatalogued"] += 1
            else:
                _move_aside(store, digest)
                done["orphans_removed"] += 1
    done["partial_removed"] = node.store.clean_tmp() + node.quarantine.clean_tmp()
    return done


def _recatalogue(writer: CatalogueWriter, store: ObjectStore, digest: str) -> bool:
    """Index an orphan if it is one of our de-identified instances not already catalogued."""
    try:
        data = store.get(digest)
        ds = dcmread(io.BytesIO(data))
        ours = str(ds.get("DeidentificationMethod", "")).startswith("incisive")
        if str(ds.get("PatientIdentityRemoved", "")) != "YES" or not ours:
            return False
        f = facts(ds)
    except Exception:  # unreadable orphan: set aside
        return False
    if writer.existing_instances([f["sop_uid"]]):
        return False
    writer.add_instance(f, digest, len(data), None)
    return True

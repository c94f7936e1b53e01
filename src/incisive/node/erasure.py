"""What a node holds of one data subject (a patient pseudonym), its removal, and the erasure list a restore
re-applies.

Shared by :mod:`incisive.node.compliance.subjects` (the data-subject request, journaled there) and
:mod:`incisive.node.backup.restore`, so that the backup package never imports the compliance package.

**Held of a subject**: its ``patient`` row with the studies, series and instances under it (and their objects in
``store/``); the quarantine items carrying its pseudonym (and their objects in ``quarantine/``); its clinical
record; the inference results naming its pseudonym, one of its series or one of its instances. Not per subject,
so left alone: import runs and issues (outcome counts, keyed digests of files) and the overlap log (keyed hashes of
the unit sets behind published numbers, kept so that differencing queries stay refused; nothing in it leads back
to a pseudonym without the node's overlap key).

**Removal order** (:func:`remove`): the objects first (only those no other row references), then every row in one
transaction. A process killed in between leaves rows whose objects are gone; the caller's journal (a record in
state ``erasing``) finishes the removal, and since the rows still name everything that is left, nothing of the
subject can be left behind unnamed. Objects are removed through a plain :class:`ObjectStore` (by address), so
removal needs no data key, on a Central Node tenant either. Then the catalogue's files are scrubbed (:func:`_scrub`:
SQLite zeroes the deleted content and empties its write-ahead log; PostgreSQL vacuums the tables).

**The erasure list** ``<node>/compliance/erasures.json`` (mode 0600): ``{"version": 1, "erasures": {ID: {"subject":
DIGEST, "salt": HEX, "recorded_at": TIME}}}``, where ``DIGEST`` is HMAC-SHA256 of the pseudonym under that entry's
own random salt (32 hex digits). The salt is the key of the digest: it lives only in this list (and its copies in
backups), never in the erasure record or the audit chain, which hold the digest alone. The list is a node
configuration file (so each backup snapshot carries it) and is also written into every directory backup repository
when an erase is done (``<repository>/erasures.json``). :func:`reapply_at_restore` runs at the end of a restore:
every subject of the restored catalogue whose digest an entry names is removed again, so restoring a backup taken
before an erase does not bring the subject back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, or_, select, text
from sqlalchemy.exc import SQLAlchemyError

from incisive.common.audit import now_iso
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import IntegrityError
from incisive.common.fsio import atomic_write_text
from incisive.common.logging import get_logger
from incisive.node.catalogue.models import (
    ClinicalRecord,
    InferenceResult,
    Instance,
    Patient,
    QuarantineItem,
    Series,
    Study,
)
from incisive.node.home import Node
from incisive.node.store import ObjectStore

log = get_logger("compliance")
LIST = Path("compliance") / "erasures.json"
REPOSITORY_LIST = "erasures.json"  # beside FORMAT in a directory backup repository
Step = Callable[[str], None]
TABLES = (InferenceResult, Instance, Series, Study, Patient, QuarantineItem, ClinicalRecord)  # a subject's rows


@dataclass
class Holding:
    """What a node holds of one subject: counts only (never a UID or the pseudonym)."""

    patient: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    objects: int = 0
    bytes: int = 0
    quarantined: int = 0
    clinical: int = 0
    inference: int = 0

    @property
    def empty(self) -> bool:
        return not (self.patient or self.quarantined or self.clinical or self.inference)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Rows:
    holding: Holding
    patient_ids: list[int]
    study_ids: list[int]
    series_ids: list[int]
    instance_ids: list[int]
    store_objects: list[str]
    quarantine_ids: list[int]
    quarantine_objects: list[str]
    clinical_ids: list[int]
    inference_ids: list[int]


def _rows(node: Node, pseudonym: str) -> _Rows:
    with node.catalogue.session() as s:
        patients = list(s.scalars(select(Patient.id).where(Patient.pseudonym == pseudonym)))
        studies = list(s.scalars(select(Study.id).where(Study.patient_id.in_(patients)))) if patients else []
        series = list(s.execute(select(Series.id, Series.series_uid).where(Series.study_id.in_(studies)))
                      ) if studies else []
        series_ids = [r[0] for r in series]
        instances = list(s.execute(select(Instance.id, Instance.sop_uid, Instance.object_hash, Instance.size)
                                   .where(Instance.series_id.in_(series_ids)))) if series_ids else []
        hashes = sorted({r[2] for r in instances})
        shared = set(s.scalars(select(Instance.object_hash).where(Instance.object_hash.in_(hashes),
                                                                    Instance.series_id.not_in(series_ids)))
                     ) if hashes else set()
        quarantine = list(s.execute(select(QuarantineItem.id, QuarantineItem.object_hash)
                                    .where(QuarantineItem.pseudonym == pseudonym)))
        q_ids = [r[0] for r in quarantine]
        q_hashes = sorted({r[1] for r in quarantine})
        q_shared = set(s.scalars(select(QuarantineItem.object_hash).where(
            QuarantineItem.object_hash.in_(q_hashes), QuarantineItem.id.not_in(q_ids)))) if q_hashes else set()
        clinical = list(s.scalars(select(ClinicalRecord.id).where(ClinicalRecord.pseudonym == pseudonym)))
        refs = [InferenceResult.pseudonym == pseudonym]
        if series:
            refs.append(InferenceResult.series_uid.in_([r[1] for r in series]))
        if instances:
            refs.append(InferenceResult.sop_uid.in_([r[1] for r in instances]))
        inference = list(s.scalars(select(InferenceResult.id).where(or_(*refs))))
    store_objects = [h for h in hashes if h not in shared]
    holding = Holding(patient=len(patients), studies=len(studies), series=len(series), instances=len(instances),
                      objects=len(store_objects) + len(q_hashes) - len(q_shared),
                      bytes=sum(int(r[3] or 0) for r in instances), quarantined=len(quarantine),
                      clinical=len(clinical), inference=len(inference))
    return _Rows(holding, patients, studies, series_ids, [r[0] for r in instances], store_objects, q_ids,
                 [h for h in q_hashes if h not in q_shared], clinical, inference)


def held(node: Node, pseudonym: str) -> Holding:
    """Counts of what ``node`` holds of the subject ``pseudonym`` (all zero: not held)."""
    return _rows(node, pseudonym).holding


def _noop(_step: str) -> None:
    return None


def remove(node: Node, pseudonym: str, step: Step = _noop) -> Holding:
    """Remove everything ``node`` holds of ``pseudonym`` (objects, then rows; see the module) and return what was
    removed. Idempotent: a second call finds nothing and removes nothing. ``step`` is called after each phase
    (``objects-half``, ``objects``, ``rows``)."""
    rows = _rows(node, pseudonym)
    todo = ([(ObjectStore(node.home / "store"), d) for d in rows.store_objects]
            + [(ObjectStore(node.home / "quarantine"), d) for d in rows.quarantine_objects])
    for number, (store, digest) in enumerate(todo, 1):
        store.remove(digest)
        if number == len(todo) // 2:
            step("objects-half")
    step("objects")
    sqlite = node.catalogue.dialect == "sqlite"
    with node.catalogue.session() as s:
        if sqlite:  # deleted cells and freed pages are overwritten with zeros, not left in the file
            s.execute(text("PRAGMA secure_delete = ON"))
        if rows.inference_ids:
            s.execute(delete(InferenceResult).where(InferenceResult.id.in_(rows.inference_ids)))
        if rows.instance_ids:
            s.execute(delete(Instance).where(Instance.id.in_(rows.instance_ids)))
        if rows.series_ids:
            s.execute(delete(Series).where(Series.id.in_(rows.series_ids)))
        if rows.study_ids:
            s.execute(delete(Study).where(Study.id.in_(rows.study_ids)))
        if rows.patient_ids:
            s.execute(delete(Patient).where(Patient.id.in_(rows.patient_ids)))
        if rows.quarantine_ids:
            s.execute(delete(QuarantineItem).where(QuarantineItem.id.in_(rows.quarantine_ids)))
        if rows.clinical_ids:
            s.execute(delete(ClinicalRecord).where(ClinicalRecord.id.in_(rows.clinical_ids)))
    _scrub(node)
    step("rows")
    return rows.holding


def _scrub(node: Node) -> None:
    """Leave no copy of the deleted rows in the catalogue's files where the engine allows: SQLite's write-ahead
    log is checkpointed into the database (whose deleted content is zeroed: ``secure_delete``) and truncated;
    PostgreSQL's tables are vacuumed (the space becomes free; its bytes go when it is reused and the WAL
    segments recycle, as a backup's copy goes with retention). Best effort: a reader holding an old snapshot
    only delays it."""
    try:
        if node.catalogue.dialect == "sqlite":
            with node.catalogue.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            with node.catalogue.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for table in TABLES:
                    conn.exec_driver_sql(f"VACUUM {table.__tablename__}")
    except SQLAlchemyError as exc:
        log.warning("catalogue not scrubbed after an erase (%s); the next checkpoint or vacuum does it",
                    type(exc).__name__)


def pseudonyms(node: Node) -> set[str]:
    """Every patient pseudonym the catalogue names anywhere (patients, clinical, quarantine, inference)."""
    with node.catalogue.session() as s:
        found = set(s.scalars(select(Patient.pseudonym)))
        for column in (ClinicalRecord.pseudonym, QuarantineItem.pseudonym, InferenceResult.pseudonym):
            found.update(p for p in s.scalars(select(column).distinct()) if p)
    return found


# --- the erasure list -------------------------------------------------------------------------------------
def subject_digest(salt: bytes, pseudonym: str) -> str:
    return hmac.new(salt, b"erasure\x00" + pseudonym.encode(), hashlib.sha256).hexdigest()[:32]


def new_entry(pseudonym: str) -> dict[str, str]:
    """A list entry for ``pseudonym``: its digest under a fresh salt (the salt stays in the list only)."""
    salt = secrets.token_bytes(32)
    return {"subject": subject_digest(salt, pseudonym), "salt": salt.hex(), "recorded_at": now_iso()}


def load_list(path: Path) -> dict[str, dict[str, str]]:
    """The entries of an erasure list file (``{}`` when there is none)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        entries = data["erasures"]
        if not isinstance(entries, dict) or not all(
                isinstance(e, dict) and {"subject", "salt"} <= set(e) for e in entries.values()):
            raise ValueError("erasures")
    except (OSError, ValueError, KeyError, TypeError):
        raise IntegrityError(f"the erasure list {path} is unreadable; restore it from a backup") from None
    return {str(k): {str(a): str(b) for a, b in v.items()} for k, v in entries.items()}


def save_list(path: Path, entries: dict[str, dict[str, str]]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"version": 1, "erasures": dict(sorted(entries.items()))}, indent=1,
                                       sort_keys=True) + "\n", mode=0o600)


def add_to_list(path: Path, entries: dict[str, dict[str, str]]) -> None:
    """Merge ``entries`` into the list at ``path`` (an entry already there is kept as it is)."""
    merged = {**entries, **load_list(path)}
    if merged != load_list(path):
        save_list(path, merged)


def matches(entries: dict[str, dict[str, str]], candidates: Iterable[str]) -> dict[str, str]:
    """Entry id → the pseudonym among ``candidates`` whose digest that entry names."""
    keyed = [(i, bytes.fromhex(e["salt"]), e["subject"]) for i, e in entries.items()]
    found: dict[str, str] = {}
    for pseudonym in candidates:
        for entry_id, salt, digest in keyed:
            if entry_id not in found and hmac.compare_digest(subject_digest(salt, pseudonym), digest):
                found[entry_id] = pseudonym
    return found


ERASED = "the data subject was erased (GDPR Art. 17) at this node; not stored again"


def erased_among(node: Node, candidates: Iterable[str]) -> set[str]:
    """Which of ``candidates`` (pseudonyms arriving at the door) an erasure list entry names: an erased subject is
    not stored again by a later import, C-STORE or upload. One stat per call when nothing was ever erased."""
    path = node.home / LIST
    if not path.is_file():
        return set()
    return set(matches(load_list(path), {c for c in candidates if c}).values())


class ErasedFilter:
    """``erased(pseudonym)``: whether an erasure list entry names it, the list read once (for a run of rows)."""

    def __init__(self, node: Node) -> None:
        path = node.home / LIST
        self.entries = load_list(path) if path.is_file() else {}

    def __call__(self, pseudonym: str) -> bool:
        return bool(self.entries) and bool(matches(self.entries, [pseudonym]))


def restore_sources(to: Path, folder: Path) -> list[Path]:
    """Erasure lists a restore of snapshot ``folder`` into node ``to`` re-applies: the snapshot's own (its config,
    written into ``to``) and, for a directory backup repository, the repository's and every other snapshot's
    (an older snapshot learns of erasures done after it). A restic snapshot is restored alone: its own list."""
    out = [to / LIST]
    repo = folder.parent.parent
    if folder.parent.name == "snapshots" and (repo / "FORMAT").is_file():
        out.append(repo / REPOSITORY_LIST)
        out += sorted(repo.glob(f"snapshots/*/config/{LIST.as_posix()}"))
    return [p for p in out if p.is_file()]


def reapply(node: Node, lists: Iterable[Path], actor: str = "restore") -> dict[str, Any]:
    """Remove again every subject of ``node`` that an entry of ``lists`` names; the merged list is kept in the
    node. Each removal is audited (``subject.erase.reapplied``: entry id, digest, counts)."""
    entries: dict[str, dict[str, str]] = {}
    for path in lists:
        for entry_id, entry in load_list(path).items():
            entries.setdefault(entry_id, entry)
    if not entries:
        return {"entries": 0, "subjects": 0}
    found = matches(entries, pseudonyms(node))
    for entry_id, pseudonym in sorted(found.items()):
        removed = remove(node, pseudonym)
        NodeAudit(node.home).append(actor, "subject.erase.reapplied", target=entry_id, node=node.settings.node_id,
                                    details={"subject": entries[entry_id]["subject"], **removed.as_dict()})
    add_to_list(node.home / LIST, entries)
    if found:
        log.info("erasure list re-applied: %d subject(s) removed again", len(found))
    return {"entries": len(entries), "subjects": len(found)}


def reapply_at_restore(node: Node, folder: Path) -> int:
    """The restore hook: how many subjects of the restored node were removed again (see the module)."""
    return int(reapply(node, restore_sources(node.home, folder))["subjects"])

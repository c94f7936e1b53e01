"""Folder import: walk → de-identify (worker processes) → store (fsync) → catalogue (batched commits).

Uses every core: workers parse and de-identify, the parent process writes objects and catalogue rows
while they work. A bad file never aborts a run; it is counted and reported with a reason. Re-importing the
same files stores nothing new because de-identification is deterministic (same key → same bytes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from incisive.common.crypto import read_secret
from incisive.common.logging import get_logger
from incisive.node.catalogue.models import ImportIssue, ImportRun
from incisive.node.catalogue.writer import IngestWriter, now
from incisive.node.erasure import ERASED, erased_among
from incisive.node.home import Node
from incisive.node.ingest.dicom_file import FileOutcome, WorkerConfig, init_worker, process_path
from incisive.node.ingest.walk import Candidate, walk
from incisive.node.quota import enforce_quota

log = get_logger("ingest")
BATCH = 128
OUTCOMES = ("imported", "duplicate", "conflict", "quarantined", "rejected")
REMOVED_KEY = "removed_beyond_table"
# object writes (write + fsync + rename + directory fsync) and the sealing of an encrypted store's objects run here
# while the calling thread sends the catalogue rows; fsync and hashing release the GIL, so a received instance
# pays max(fsync, SQL) instead of their sum
_OBJECT_IO = ThreadPoolExecutor(max_workers=4, thread_name_prefix="object-io")


@dataclass
class ImportReport:
    run_id: int
    counts: Counter[str] = field(default_factory=Counter)
    bytes_stored: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)  # shown to the operator, never persisted
    removed: Counter[str] = field(default_factory=Counter)  # values removed beyond Table E.1-1, by keyword

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, **{k: self.counts.get(k, 0) for k in OUTCOMES},
                "bytes_stored": self.bytes_stored, "removed_beyond_table": dict(sorted(self.removed.items())),
                "problems": self.problems}


def run_counts(counts: Counter[str], removed: Counter[str]) -> dict[str, Any]:
    """What an import run keeps in the catalogue: outcome counts and removals by keyword (never values)."""
    return {**{k: counts.get(k, 0) for k in OUTCOMES}, REMOVED_KEY: dict(sorted(removed.items()))}


def worker_config(node: Node) -> WorkerConfig:
    s = node.settings
    return WorkerConfig(key=read_secret(node.key_path), safe_private=tuple(s.safe_private_tags),
                        quarantine_modalities=tuple(s.quarantine_modalities), sr_keep_text=s.sr_keep_text,
                        max_file_bytes=s.max_file_bytes, door=s.door)


def _outcomes(paths: list[Path], config: WorkerConfig, workers: int) -> Iterator[FileOutcome]:
    if workers <= 1 or len(paths) < 16:
        init_worker(config)
        yield from map(process_path, paths)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=init_worker, initargs=(config,)) as pool:
        yield from pool.map(process_path, paths, chunksize=8)


def import_dicom(node: Node, root: Path, progress: Callable[[int, int], None] | None = None,
                 workers: int | None = None) -> ImportReport:
    """Import every file under ``root``; ``progress(done, total)`` is called as files complete."""
    candidates = list(walk(root))
    total = len(candidates)
    source_digest = node.pseudonymiser.digest("import-source", str(root.resolve()))
    with node.catalogue.session() as s:
        run = ImportRun(kind="dicom", source_digest=source_digest, started_at=now(), counts={})
        s.add(run)
        s.flush()
        run_id = run.id
    report = ImportReport(run_id)
    good = [c for c in candidates if c.problem is None]
    done = 0
    for c in candidates:
        if c.problem is not None:
            _issue(node, report, c, "rejected", c.problem)
            done += 1
    if progress:
        progress(done, total)
    outcomes = _outcomes([c.path for c in good], worker_config(node), workers or node.settings.workers)
    writer = IngestWriter()
    for batch in _batched(zip(good, outcomes, strict=True), BATCH):
        _record_batch(node, report, batch, writer)
        done += len(batch)
        if progress:
            progress(done, total)
    with node.catalogue.session() as s:
        run = s.get_one(ImportRun, run_id)
        run.finished_at = now()
        run.counts = run_counts(report.counts, report.removed)
    node.store.clean_tmp()
    log.info("dicom import run %s finished: %s", run_id, dict(report.counts))
    return report


def _batched(items: Iterable[tuple[Candidate, FileOutcome]], n: int) -> Iterator[list[tuple[Candidate, FileOutcome]]]:
    batch: list[tuple[Candidate, FileOutcome]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _issue(node: Node, report: ImportReport, c: Candidate, outcome: str, reason: str, session: Any = None) -> None:
    report.counts[outcome] += 1
    report.problems.append({"file": c.rel, "outcome": outcome, "reason": reason})
    issue = ImportIssue(run_id=report.run_id, outcome=outcome, reason=reason,
                        file_digest=node.pseudonymiser.digest("import-file", c.rel))
    if session is not None:
        session.add(issue)
    else:
        with node.catalogue.session() as s:
            s.add(issue)


@dataclass
class Recorded:
    """What happened to one de-identified instance: imported | duplicate | conflict | quarantined | rejected."""

    result: str
    reason: str = ""
    bytes_created: int = 0


CONFLICT = ("an instance with the same SOPInstanceUID and different content is already stored; kept the first")


def record_outcomes(node: Node, run_id: int | None, items: Sequence[tuple[str, FileOutcome]],
                    writer: IngestWriter | None = None) -> list[Recorded]:
    """Store objects (fsync) and catalogue rows and issues, committed in one transaction.

    ``items`` pairs a label (a relative path, or a receiving-side counter; only its keyed digest is
    persisted) with the worker's outcome. The objects are written on I/O threads while this thread sends the
    rows; the commit waits for every object to be durable, so a committed row never points at bytes that are
    not on disk (a failed write rolls the batch back). When this returns, every ``imported``/``quarantined``
    instance is durable: its object is fsynced and its row committed. Shared by folder import, the C-STORE
    SCP and STOW-RS. Pass the same ``writer`` for every batch of one run (an association, an import) so
    patient/study/series ids are looked up once per run rather than once per batch.
    """
    w = writer or IngestWriter()
    erased = erased_among(node, (str(o.facts.get("pseudonym") or "") for _, o in items if o.status != "rejected"))
    if erased:  # an erased data subject arriving again (node/erasure.py): refused, never stored
        items = [(label, FileOutcome("rejected", ERASED)
                  if o.status != "rejected" and o.facts.get("pseudonym") in erased else o) for label, o in items]
    results: list[Recorded] = []
    writes: list[tuple[int, int, Future[tuple[str, bool]]]] = []
    with node.catalogue.transaction() as conn, w.transaction(conn):
        stored_uids = [o.facts["sop_uid"] for _, o in items if o.status == "stored"]
        quarantined_uids = [o.facts["sop_uid"] for _, o in items if o.status == "quarantine"]
        known = w.existing_instances(stored_uids)
        known_q = w.existing_quarantine(quarantined_uids)
        # a tenant's quota (node/quota.py): the whole batch is refused before anything of it is written
        enforce_quota(node, [len(o.data) for _, o in items if o.status == "stored" and o.facts["sop_uid"] not in known])
        seals = [_seal(node, o, known, known_q) for _, o in items]
        added: dict[tuple[str, str], str] = {}

        def issue(label: str, outcome: str, reason: str) -> Recorded:
            if run_id is not None:
                w.add_issue(run_id, outcome, reason, node.pseudonymiser.digest("import-file", label))
            return Recorded(outcome, reason)

        for (label, o), sealing in zip(items, seals, strict=True):
            if o.status == "rejected":
                results.append(issue(label, "rejected", o.reason))
                continue
            uid = o.facts["sop_uid"]
            seen, store = (known, node.store) if o.status == "stored" else (known_q, node.quarantine)
            if uid in seen:  # the same plaintext (whatever key sealed the stored object)?
                earlier = added.get((o.status, uid))  # an instance of this batch, maybe not written yet
                same = earlier == o.digest if earlier else store.same_content(seen[uid], o.digest)
                results.append(Recorded("duplicate") if same else issue(label, "conflict", CONFLICT))
                continue
            assert sealing is not None
            blob, digest = sealing.result()  # the row holds the address the object is written at
            write = _OBJECT_IO.submit(store.put_sealed, blob, digest)
            if o.status == "quarantine":
                writes.append((-1, 0, write))
                w.add_quarantine(o.facts, digest, o.reason)
                results.append(issue(label, "quarantined", o.reason))
            else:
                writes.append((len(results), len(o.data), write))
                w.add_instance(o.facts, digest, len(o.data), run_id)
                results.append(Recorded("imported"))
            seen[uid] = digest
            added[o.status, uid] = o.digest
        w.flush()
        wait([f for _, _, f in writes])  # every object durable before the commit; a failure rolls back
        for index, size, write in writes:
            _, created = write.result()
            if index >= 0 and created:
                results[index].bytes_created = size
    w.committed()
    return results


def _seal(node: Node, o: FileOutcome, known: dict[str, str], known_q: dict[str, str]
          ) -> Future[tuple[bytes, str]] | None:
    """What the store writes for ``o`` and its address (None: rejected or already stored), sealed once.

    An encrypted store seals on the I/O threads (hashing the sealed bytes releases the GIL), a plain one here
    (nothing to compute).
    """
    if o.status == "rejected" or o.facts["sop_uid"] in (known if o.status == "stored" else known_q):
        return None
    store = node.store if o.status == "stored" else node.quarantine
    if store.sealed:
        return _OBJECT_IO.submit(store.seal, o.data, o.digest)
    done: Future[tuple[bytes, str]] = Future()
    done.set_result(store.seal(o.data, o.digest))
    return done


def _record_batch(node: Node, report: ImportReport, batch: list[tuple[Candidate, FileOutcome]],
                  writer: IngestWriter) -> None:
    """Store objects, then catalogue rows, committed together (one transaction per batch)."""
    results = record_outcomes(node, report.run_id, [(c.rel, o) for c, o in batch], writer)
    for (c, o), r in zip(batch, results, strict=True):
        report.counts[r.result] += 1
        if r.result in ("imported", "quarantined"):
            report.removed.update(o.removed)
        report.bytes_stored += r.bytes_created
        if r.result not in ("imported", "duplicate"):
            report.problems.append({"file": c.rel, "outcome": r.result, "reason": r.reason})

"""One upload run: walk a folder, de-identify (worker processes), post STOW-RS batches, journal what was acknowledged.

Order of work: the clinical CSV is checked first (identifier columns refused before anything is sent) and its rows
posted; then the folder is walked (:func:`incisive.node.ingest.walk.walk`: no symlink escapes), files the journal
has as done are skipped unread, the rest is de-identified by the node's per-file worker in a process pool (a
bounded window of results in memory) and sent in batches of about ``batch_bytes``. Instances the de-identifier
quarantines (burned-in text risk, documents) or rejects stay here and are counted. After each batch's
acknowledgement its rows go into the journal in one transaction, so a cut (:class:`.client.ConnectionLost`, a
kill) loses at most the batch in flight, which the next run sends again.

The pool runs under the ``forkserver`` start method: its workers never inherit this process's threads or locks
(a caller may be serving HTTP in threads), and this process's own de-identifier state is left alone.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from incisive.common.crypto import sha256_hex
from incisive.common.errors import InputError
from incisive.common.logging import get_logger
from incisive.node.ingest.clinical import pseudonymise_csv
from incisive.node.ingest.dicom_file import FileOutcome, WorkerConfig, init_worker, process_path
from incisive.node.ingest.walk import walk
from incisive.node.upload.client import Answer, CentralClient
from incisive.node.upload.home import Uploader
from incisive.node.upload.journal import Entry, Journal

log = get_logger("upload")
MAX_BATCH_INSTANCES = 1000


@dataclass
class UploadReport:
    files: int = 0
    skipped: int = 0  # done in an earlier run (journal), not read again
    sent: int = 0  # stored by the Central Node
    duplicates: int = 0  # the Central Node had them already
    held: int = 0  # stored in the Central Node's quarantine
    quarantined: int = 0  # held back here, never sent
    rejected: Counter[str] = field(default_factory=Counter)  # reason → count (here or at the Central Node)
    unacknowledged: int = 0  # sent but not in the answer: sent again next run
    bytes: int = 0  # de-identified bytes acknowledged
    batches: int = 0
    retries: int = 0
    seconds: float = 0.0
    clinical: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "skipped": self.skipped, "sent": self.sent, "duplicates": self.duplicates,
                "held_at_central": self.held, "quarantined": self.quarantined,
                "rejected": dict(sorted(self.rejected.items())), "rejected_total": sum(self.rejected.values()),
                "unacknowledged": self.unacknowledged, "bytes": self.bytes, "batches": self.batches,
                "retries": self.retries, "seconds": round(self.seconds, 3), "clinical": self.clinical}


def _outcomes(paths: list[Path], config: WorkerConfig, workers: int) -> Generator[FileOutcome, None, None]:
    """De-identified outcomes in the order of ``paths``, at most ``2 * workers`` results held at once."""
    if not paths:
        return
    workers = max(1, min(workers, len(paths)))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=init_worker, initargs=(config,))
    window: deque[Future[FileOutcome]] = deque()
    try:
        for path in paths:
            window.append(pool.submit(process_path, path))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Pending:
    entry: Entry
    data: bytes


class _Batches:
    """Instances waiting to be sent, local outcomes waiting to be journaled."""

    def __init__(self, client: CentralClient, journal: Journal, report: UploadReport, batch_bytes: int,
                 on_batch: Callable[[int], None] | None) -> None:
        self.client, self.journal, self.report = client, journal, report
        self.batch_bytes, self.on_batch = batch_bytes, on_batch
        self.pending: list[_Pending] = []
        self.size = 0
        self.local: list[Entry] = []

    def add(self, entry: Entry, data: bytes) -> None:
        if self.pending and self.size + len(data) > self.batch_bytes:
            self.flush()
        self.pending.append(_Pending(entry, data))
        self.size += len(data)
        if self.size >= self.batch_bytes or len(self.pending) >= MAX_BATCH_INSTANCES:
            self.flush()

    def flush(self) -> None:
        batch, self.pending, self.size = self.pending, [], 0
        answers = self.client.stow([p.data for p in batch], [p.entry.sop_uid for p in batch]) if batch else []
        entries = self.local
        self.local = []
        for pending, answer in zip(batch, answers, strict=True):
            entries.extend(self._count(pending, answer))
        self.journal.record(entries)
        if batch:
            self.report.batches += 1
            log.info("upload batch %d: %d instances", self.report.batches, len(batch))
            if self.on_batch:
                self.on_batch(self.report.batches)

    def _count(self, pending: _Pending, answer: Answer) -> Iterable[Entry]:
        r = self.report
        if answer.status == "unknown":
            r.unacknowledged += 1
            return ()
        if answer.status == "refused":
            r.rejected[f"Central Node: {answer.reason}"] += 1
        else:
            r.bytes += len(pending.data)
            r.sent += answer.status == "sent"
            r.duplicates += answer.status == "duplicate"
            r.held += answer.status == "held"
        e = pending.entry
        return (Entry(e.file, e.size, e.mtime_ns, answer.status, e.sop_uid, e.digest, answer.reason),)


def prepare_clinical(uploader: Uploader, path: Path, id_column: str = "patient_id", drop: Iterable[str] = (),
                     encoding: str = "utf-8-sig") -> tuple[list[dict[str, str]], int, str]:
    """The CSV's rows pseudonymised with the provider's key (:func:`pseudonymise_csv`), the number of rows without
    a patient id (left out), and a keyed digest of what is sent (the journal's key for it)."""
    p = uploader.pseudonymiser
    rows, empty = pseudonymise_csv(p, path, id_column, drop, encoding)
    return rows, empty, p.digest("upload-clinical", sha256_hex(json.dumps(rows, sort_keys=True).encode()))


def upload(uploader: Uploader, folder: Path | None, url: str, token: str, *, clinical: Path | None = None,
           ca_file: Path | None = None, id_column: str = "patient_id", drop: Iterable[str] = (),
           encoding: str = "utf-8-sig", progress: Callable[[int, int], None] | None = None,
           on_batch: Callable[[int], None] | None = None) -> UploadReport:
    """Upload ``folder`` (and ``clinical``) to the Central Node at ``url``; resumable (see the module)."""
    started = time.monotonic()
    settings = uploader.settings
    client = CentralClient(url, token, ca_file=ca_file, retry_for_s=settings.retry_for_s)
    p = uploader.pseudonymiser
    journal = Journal(uploader.journal_path, p.digest("upload-destination", client.url))
    report = UploadReport()
    try:
        prepared = prepare_clinical(uploader, clinical, id_column, drop, encoding) if clinical else None
        if prepared is not None:
            report.clinical = _send_clinical(client, journal, *prepared)
        if folder is not None:
            _send_folder(uploader, folder, client, journal, report, progress, on_batch)
    finally:
        report.retries = client.retries
        report.seconds = time.monotonic() - started
        client.close()
        journal.close()
        log.info("upload finished: sent=%d duplicates=%d quarantined=%d rejected=%d batches=%d", report.sent,
                 report.duplicates, report.quarantined, sum(report.rejected.values()), report.batches)
    return report


def _send_clinical(client: CentralClient, journal: Journal, rows: list[dict[str, str]], empty: int,
                   digest: str) -> dict[str, Any]:
    result: dict[str, Any] = {"rows": len(rows), "without_patient_id": empty}
    if journal.clinical_done(digest):
        return {**result, "skipped": True}
    answer = client.clinical(rows)
    journal.record_clinical(digest, len(rows), answer["stored"], answer["duplicates"])
    return {**result, **answer, "skipped": False}


def _send_folder(uploader: Uploader, folder: Path, client: CentralClient, journal: Journal, report: UploadReport,
                 progress: Callable[[int, int], None] | None, on_batch: Callable[[int], None] | None) -> None:
    if not folder.exists():
        raise InputError("the folder to upload does not exist")
    p = uploader.pseudonymiser
    candidates = list(walk(folder))
    report.files = len(candidates)
    done_before = journal.done()
    todo: list[tuple[Path, Entry]] = []
    for c in candidates:
        if c.problem is not None:
            report.rejected[c.problem] += 1
            continue
        try:
            st = c.path.stat()
        except OSError as exc:
            report.rejected[f"cannot stat: {exc.strerror or 'error'}"] += 1
            continue
        key = p.digest("upload-file", str(c.path.resolve()))
        if done_before.get(key) == (st.st_size, st.st_mtime_ns):
            report.skipped += 1
            continue
        todo.append((c.path, Entry(key, st.st_size, st.st_mtime_ns, "")))
    done = report.files - len(todo)
    if progress:
        progress(done, report.files)
    batches = _Batches(client, journal, report, uploader.settings.batch_bytes, on_batch)
    outcomes = _outcomes([path for path, _ in todo], uploader.worker_config(), uploader.settings.worker_count)
    try:
        for (_, entry), outcome in zip(todo, outcomes, strict=True):
            if outcome.status == "stored":
                batches.add(Entry(entry.file, entry.size, entry.mtime_ns, "", str(outcome.facts["sop_uid"]),
                                  outcome.digest), outcome.data)
            else:
                status = "quarantined" if outcome.status == "quarantine" else "rejected"
                if status == "quarantined":
                    report.quarantined += 1
                else:
                    report.rejected[outcome.reason] += 1
                batches.local.append(Entry(entry.file, entry.size, entry.mtime_ns, status, reason=outcome.reason))
            done += 1
            if progress:
                progress(done, report.files)
        batches.flush()
    finally:
        if batches.local:  # outcomes found here are final whatever happened to the connection
            journal.record(batches.local)
        outcomes.close()

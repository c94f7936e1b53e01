"""Receiving instances over the network (C-STORE, STOW-RS): de-identify, store durably, report per instance.

One :class:`Receiver` per association or STOW request. It opens an import run on the first instance, sends
every instance through the folder-import path (:func:`process_bytes` then :func:`record_outcomes`), and
returns only after the object is fsynced and its catalogue row committed — the caller acknowledges after.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import OperationalError

from incisive.common.errors import CatalogueUnavailable
from incisive.common.logging import get_logger
from incisive.node.catalogue.models import ImportRun
from incisive.node.catalogue.writer import IngestWriter, now
from incisive.node.home import Node
from incisive.node.ingest.dicom_file import FileOutcome, Worker, make_worker, process_bytes, process_file, quiet_pydicom
from incisive.node.ingest.dicom_import import Recorded, record_outcomes, run_counts, worker_config
from incisive.node.quota import QuotaExceeded

log = get_logger("net.receive")
_quiet = threading.Lock()
_quieted: list[bool] = []


def node_worker(node: Node) -> Worker:
    """The node's own door (its key and de-identification options), built once per configuration. Each Receiver
    passes it to every call, so a process receiving for several nodes (a Central Node's tenants) never applies one
    node's options to another's instances."""
    with _quiet:
        if not _quieted:
            quiet_pydicom()
            _quieted.append(True)
    return make_worker(worker_config(node))


@dataclass
class Received:
    result: str  # imported | duplicate | conflict | quarantined | rejected | error
    reason: str = ""
    sop_uid: str = ""  # the de-identified SOP Instance UID (empty when rejected)

    @property
    def ok(self) -> bool:
        return self.result in ("imported", "duplicate", "quarantined")


class Receiver:
    def __init__(self, node: Node, source: str) -> None:
        self.node = node
        self.source = source  # e.g. "dimse:<calling AE>" or "stow"; only its keyed digest is stored
        self.run_id: int | None = None
        self.counts: Counter[str] = Counter()
        self.removed: Counter[str] = Counter()  # values removed beyond Table E.1-1, by keyword
        self._n = 0
        self.writer = IngestWriter()  # patient/study/series ids cached for the life of the association
        self.worker = node_worker(node)

    def _run(self) -> int:
        if self.run_id is None:
            digest = self.node.pseudonymiser.digest("import-source", self.source)
            with self.node.catalogue.session() as s:
                run = ImportRun(kind="dicom", source_digest=digest, started_at=now(), counts={})
                s.add(run)
                s.flush()
                self.run_id = run.id
        return self.run_id

    def deidentify_file(self, path: Path) -> FileOutcome:
        """De-identify an instance spooled to disk (a received C-STORE); one above ``spool_threshold_bytes`` is
        never read into memory whole. The size limit is the worker's (``max_file_bytes``, as for every import)."""
        return process_file(path, whole_up_to=self.node.settings.spool_threshold_bytes, worker=self.worker)

    def deidentify(self, raw: bytes) -> FileOutcome:
        if len(raw) > self.node.settings.max_file_bytes:
            return FileOutcome("rejected", f"instance larger than the {self.node.settings.max_file_bytes} byte limit")
        return process_bytes(raw, self.worker)

    def record(self, outcome: FileOutcome) -> Received:
        """Store one de-identified instance; retried when a concurrent writer created the same study/series."""
        return self.record_many([outcome])[0]

    def record_many(self, outcomes: list[FileOutcome]) -> list[Received]:
        labels = []
        for _ in outcomes:
            self._n += 1
            labels.append(f"{self.source}#{self._n}")
        results: list[Recorded] | None = None
        for attempt in range(5):
            try:
                results = record_outcomes(self.node, self._run(), list(zip(labels, outcomes, strict=True)),
                                          self.writer)
                break
            except SAIntegrityError:  # another association inserted the same patient/study/series first
                time.sleep(0.01 * (attempt + 1))
            except QuotaExceeded as exc:  # a Central Node tenant at its limit: nothing of the batch was written
                log.warning("storing received instances refused: %s", exc)
                return [Received("error", str(exc)) for _ in outcomes]
            except (OperationalError, CatalogueUnavailable, OSError) as exc:
                log.error("storing received instances failed: %s", type(exc).__name__)
                return [Received("error", "storage unavailable; retry later") for _ in outcomes]
        if results is None:
            return [Received("error", "concurrent update conflict; retry later") for _ in outcomes]
        out = []
        for outcome, r in zip(outcomes, results, strict=True):
            self.counts[r.result] += 1
            if r.result in ("imported", "quarantined"):
                self.removed.update(outcome.removed)
            out.append(Received(r.result, r.reason, str(outcome.facts.get("sop_uid", ""))))
        return out

    def finish(self) -> None:
        if self.run_id is None:
            return
        try:
            with self.node.catalogue.session() as s:
                run = s.get_one(ImportRun, self.run_id)
                run.finished_at = now()
                run.counts = run_counts(self.counts, self.removed)
        except Exception as exc:  # bookkeeping only; the instances are already durable
            log.warning("could not close import run %s: %s", self.run_id, type(exc).__name__)
        log.info("receive run %s finished: %s", self.run_id, dict(self.counts))

"""Logging without PHI.

Rule for the whole code base: log counts, pseudonyms, content hashes and keyed digests, never a value read
from a DICOM header, a CSV cell or a source path. The PHI-scan test (tests/node/test_phi_scan.py) reads the
node's log file byte by byte after importing a cohort full of PHI to hold the code to it.
"""

from __future__ import annotations

import logging
from pathlib import Path

LOGGER_NAME = "incisive"


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


class NodeFileHandler(logging.FileHandler):
    """A node's log file. The standard handler reopens a closed stream outside its own error handling, so a
    record for a log whose directory is gone (a node directory removed, a Central Node tenant erased) raised
    into the code that logged it; here the handler leaves the logger instead, and other write errors go
    through :meth:`handleError`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
        except OSError:
            if Path(self.baseFilename).parent.is_dir():
                self.handleError(record)  # a real write failure: reported on stderr, as logging does
                return
            # the node directory is gone: this handler has nothing left to write to; it leaves the logger
            logging.getLogger(LOGGER_NAME).removeHandler(self)
            self.close()


def detach_logs_under(directory: Path) -> int:
    """Close and remove every file handler of ours writing under ``directory`` (before it is removed); how many."""
    root = logging.getLogger(LOGGER_NAME)
    base = directory.resolve()
    detached = 0
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(base):
            root.removeHandler(handler)
            handler.close()
            detached += 1
    return detached


def configure_node_logging(log_dir: Path, level: int = logging.INFO) -> logging.Handler:
    """Attach a file handler writing to ``<node>/logs/incisive.log`` (idempotent per path)."""
    root = logging.getLogger(LOGGER_NAME)
    target = str((log_dir / "incisive.log").resolve())
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == target:
            return handler
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = NodeFileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    return handler

"""A node's log handler whose directory disappeared drops the record instead of raising into the caller."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from incisive.common.logging import configure_node_logging, detach_logs_under, get_logger


def test_a_closed_handler_over_a_removed_directory_does_not_raise(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    handler = configure_node_logging(tmp_path / "node" / "logs")
    try:
        get_logger("t").info("first")
        handler.close()  # what closing a node's handlers does; the standard handler reopens on the next record
        shutil.rmtree(tmp_path / "node")
        get_logger("t").info("after the directory went")  # must not raise FileNotFoundError
        assert handler not in logging.getLogger("incisive").handlers  # and it left the logger
        assert "Logging error" not in capsys.readouterr().err  # nothing on stderr (a CLI's --json stays clean)
    finally:
        logging.getLogger("incisive").removeHandler(handler)


def test_detach_logs_under_removes_only_that_directorys_handlers(tmp_path: Path) -> None:
    a = configure_node_logging(tmp_path / "a" / "logs")
    b = configure_node_logging(tmp_path / "b" / "logs")
    try:
        assert detach_logs_under(tmp_path / "a") == 1
        root = logging.getLogger("incisive")
        assert a not in root.handlers and b in root.handlers
    finally:
        logging.getLogger("incisive").removeHandler(b)
        b.close()

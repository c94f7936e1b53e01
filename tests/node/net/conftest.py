"""Fixtures for the DICOM network tests: a running SCP on a free port, dcmtk tools, pydicom's own files."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from incisive.node.home import Node
from incisive.node.net.scp import DicomServer
from tests.node.api.conftest import Api, _api

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
CALLERS = ["STORESCU", "ECHOSCU", "FINDSCU", "PYTEST", "ORTHANC"]
NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (install dcmtk/orthanc via .ci/run)")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture
def scp(node: Node) -> Iterator[DicomServer]:
    server = DicomServer(node, host="127.0.0.1", port=0, allowed_aes=CALLERS)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sqlite_scp(sqlite_node: Node) -> Iterator[DicomServer]:
    server = DicomServer(sqlite_node, host="127.0.0.1", port=0, allowed_aes=CALLERS)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(node: Node) -> Iterator[Api]:
    """The node's DICOM and HTTP services together (see tests/node/api/conftest.py)."""
    yield from _api(node)

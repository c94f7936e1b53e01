"""A node's HTTP API served by uvicorn on a free port, with one token per role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from incisive.node.api.tokens import create_token
from incisive.node.home import Node
from incisive.node.serve import NodeServices


@dataclass
class Api:
    node: Node
    url: str
    dicom_port: int
    uploader: str
    viewer: str


def _api(node: Node) -> Iterator[Api]:
    services = NodeServices(node, host="127.0.0.1", dicom_port=0, http_port=0, allowed_aes=["PYTEST", "ORTHANC"])
    bound = services.start(claim=False)
    try:
        yield Api(node, f"http://127.0.0.1:{bound.http_port}", bound.dicom_port,
                  create_token(node, "uploader", "tests"), create_token(node, "viewer", "tests"))
    finally:
        services.stop()


@pytest.fixture
def api(node: Node) -> Iterator[Api]:
    yield from _api(node)


@pytest.fixture
def sqlite_api(sqlite_node: Node) -> Iterator[Api]:
    yield from _api(sqlite_node)

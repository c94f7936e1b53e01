"""``incisive node serve``: the node's DICOM SCP and HTTP API in one process (:mod:`incisive.node.serve`)."""

from __future__ import annotations

from typing import Annotated

import typer

from incisive.cli.options import HomeOpt
from incisive.common.settings import resolve_home
from incisive.node.home import Node


def serve(
    dicom_port: Annotated[int | None, typer.Option(help="DICOM port (default: node config, 11112)")] = None,
    ae_title: Annotated[str | None, typer.Option(help="Our AE title (default: node config, INCISIVE)")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP API / DICOMweb port (default: node config, 8042)")]
    = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: node config listen_host)")] = None,
    home: HomeOpt = None,
) -> None:
    """Run the DICOM SCP (C-ECHO, C-STORE, C-FIND) and the HTTP API (DICOMweb) until stopped."""
    from incisive.node.serve import serve_forever

    serve_forever(Node.open(resolve_home(home)), host, dicom_port, http_port, ae_title)

"""``incisive node serve``: the node's DICOM SCP and HTTP API in one process (:mod:`incisive.node.serve`)."""

from __future__ import annotations

from pathlib import Path
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
    dicom_tls_cert: Annotated[Path | None, typer.Option(
        help="PEM certificate (chain) for DICOM TLS, PS3.15 Annex B (default: node config dicom_tls_cert)")] = None,
    dicom_tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --dicom-tls-cert")] = None,
    dicom_tls_ca: Annotated[Path | None, typer.Option(
        help="CA bundle: DICOM peers must present a certificate it signed (client certificates required)")] = None,
    tls_cert: Annotated[Path | None, typer.Option(
        help="PEM certificate (chain): serve the HTTP API / DICOMweb over https (default: node config tls_cert)")]
    = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
    home: HomeOpt = None,
) -> None:
    """Run the DICOM SCP (C-ECHO, C-STORE, C-FIND) and the HTTP API (DICOMweb) until stopped."""
    from incisive.node.net.tls import TlsFiles
    from incisive.node.serve import serve_forever

    node = Node.open(resolve_home(home))
    s = node.settings
    dicom_tls = TlsFiles.from_options("DICOM TLS", dicom_tls_cert or s.dicom_tls_cert, dicom_tls_key or s.dicom_tls_key,
                                      dicom_tls_ca or s.dicom_tls_ca)
    http_tls = TlsFiles.from_options("DICOMweb TLS", tls_cert or s.tls_cert, tls_key or s.tls_key)
    serve_forever(node, host, dicom_port, http_port, ae_title, dicom_tls=dicom_tls, http_tls=http_tls)

"""``incisive central serve``: DIMSE + DICOMweb + the tenant API of every tenant, one process
(:mod:`incisive.central.serve`). :mod:`incisive.cli.central` registers these commands (:func:`register`).

This module does not import :mod:`incisive.cli.central` at import time (that module imports this one while it
loads), so ``--central`` is declared here with the same help text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CENTRAL_HELP = "Central Node directory (default: $INCISIVE_CENTRAL or the current directory)"
CentralOpt = Annotated[Path | None, typer.Option("--central", "-C", help=CENTRAL_HELP)]


def serve(
    central: CentralOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: central.toml listen_host)")] = None,
    dicom_port: Annotated[int | None, typer.Option(
        help="DICOM port of every tenant (default: central.toml, 11113; 0 = any free port)")] = None,
    http_port: Annotated[int | None, typer.Option(
        help="HTTP port: DICOMweb and the tenant API (default: central.toml, 8043; 0 = any free port)")] = None,
    dicom_tls_cert: Annotated[Path | None, typer.Option(
        help="PEM certificate (chain) for DICOM TLS, PS3.15 Annex B")] = None,
    dicom_tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --dicom-tls-cert")] = None,
    dicom_tls_ca: Annotated[Path | None, typer.Option(
        help="CA bundle: DICOM peers must present a certificate it signed (client certificates required)")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate (chain): serve HTTP over https only")]
    = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
) -> None:
    """Serve every tenant: one DICOM AE (the called AE title picks the tenant) and one HTTP port (the bearer
    token picks it), until SIGINT/SIGTERM. Refuses to start, saying why, with a missing or wrong master key."""
    from incisive.central.home import Central
    from incisive.central.serve import serve_forever
    from incisive.central.settings import resolve_central
    from incisive.node.net.tls import TlsFiles

    dicom_tls = TlsFiles.from_options("DICOM TLS", dicom_tls_cert, dicom_tls_key, dicom_tls_ca)
    http_tls = TlsFiles.from_options("DICOMweb TLS", tls_cert, tls_key)
    opened = Central.open(resolve_central(central))  # MasterKeyError before anything listens
    serve_forever(opened, host, dicom_port, http_port, dicom_tls=dicom_tls, http_tls=http_tls)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``incisive central``."""
    app.command("serve")(serve)

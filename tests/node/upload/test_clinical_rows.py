"""Clinical rows pseudonymised at the provider (``pseudonymise_csv``) and stored at a tenant
(``store_pseudonymised_rows``): the same records as a node's own import with the same key, idempotent, all or
nothing; and the uploader's POST of them, against a server with the ``/tenant/v1/clinical`` contract."""

from __future__ import annotations

import csv
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from incisive.common.crypto import Pseudonymiser, read_secret
from incisive.common.errors import InputError
from incisive.node.api.app import create_app
from incisive.node.api.auth import require
from incisive.node.api.tokens import create_token
from incisive.node.catalogue.models import ClinicalRecord
from incisive.node.home import Node
from incisive.node.ingest.clinical import import_clinical, pseudonymise_csv, store_pseudonymised_rows
from incisive.node.upload.home import Uploader
from incisive.node.upload.run import upload


def _records(node: Node) -> dict[str, tuple[Any, ...]]:
    with node.catalogue.session() as s:
        return {r.pseudonym: (r.diagnosis, r.cancer_type, r.sex, r.age_band, r.labels, r.fields)
                for r in s.scalars(select(ClinicalRecord))}


def _count(node: Node) -> int:
    with node.catalogue.session() as s:
        return s.scalar(select(func.count(ClinicalRecord.id))) or 0


def test_rows_pseudonymised_at_the_provider_give_the_nodes_records(node: Node, tmp_path: Path, cohort: Path) -> None:
    own = Node.init(tmp_path / "own", provider="Test Hospital")  # the provider's own node, for comparison
    try:
        import_clinical(own, cohort / "clinical.csv", drop=["patient_name"])
        rows, empty = pseudonymise_csv(Pseudonymiser(read_secret(own.key_path)), cohort / "clinical.csv",
                                       drop=["patient_name"])
        expected = _records(own)
    finally:
        own.catalogue.dispose()
    assert empty == 0 and len(rows) == len(expected) > 5
    originals = {row["patient_id"] for row in csv.DictReader((cohort / "clinical.csv").open(encoding="utf-8"))}
    assert not originals & {row["patient_id"] for row in rows}
    assert store_pseudonymised_rows(node, rows) == {"stored": len(rows), "duplicates": 0}
    assert _records(node) == expected
    assert store_pseudonymised_rows(node, rows) == {"stored": 0, "duplicates": len(rows)}
    changed = [dict(row) for row in rows]
    changed[0]["stage"] = "IV" if changed[0].get("stage") != "IV" else "III"
    assert store_pseudonymised_rows(node, changed) == {"stored": 1, "duplicates": len(rows) - 1}
    assert _count(node) == len(rows)


@pytest.mark.parametrize(("rows", "phrase"), [
    ("not a list", "rows must be a list"),
    (["not an object"], "row 1: must be an object"),
    ([{"patient_id": "MRN7000000", "diagnosis": "lung"}], "row 1: patient_id must be a patient pseudonym"),
    ([{"patient_id": "PAAAAAAAAAAAAAAAA"}, {"patient_id": "PAAAAAAAAAAAAAAAA", "patient_name": "Rossi Sofia"}],
     "row 2: column(s) that look like direct identifiers: patient_name"),
    ([{"patient_id": "PAAAAAAAAAAAAAAAA", "labels": {"lesion": 1}}], "row 1: column 'labels' must be text"),
])
def test_bad_rows_store_nothing_and_never_echo_values(sqlite_node: Node, rows: Any, phrase: str) -> None:
    with pytest.raises(InputError) as err:
        store_pseudonymised_rows(sqlite_node, rows)
    assert phrase in str(err.value)
    assert "Rossi" not in str(err.value) and "MRN7000000" not in str(err.value)
    assert _count(sqlite_node) == 0


@pytest.fixture
def tenant_like(sqlite_node: Node) -> Iterator[tuple[str, str]]:
    """The node's DICOMweb app plus the Central Node's clinical route contract, on a free port."""
    app = FastAPI()
    app.state.node = sqlite_node

    @app.post("/tenant/v1/clinical", dependencies=[Depends(require("uploader"))])
    async def clinical(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            return JSONResponse(store_pseudonymised_rows(sqlite_node, body["rows"]))
        except InputError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)

    app.mount("/", create_app(sqlite_node))
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", create_token(sqlite_node, "uploader", "tests")
    finally:
        server.should_exit = True
        thread.join(10)


def test_uploader_posts_clinical_rows(tenant_like: tuple[str, str], sqlite_node: Node, tmp_path: Path,
                                      cohort: Path) -> None:
    url, token = tenant_like
    up = Uploader.init(tmp_path / "uploader", "Test Hospital")
    with pytest.raises(InputError, match="patient_name"):  # refused before anything is sent
        upload(up, None, url, token, clinical=cohort / "clinical.csv")
    report = upload(up, None, url, token, clinical=cohort / "clinical.csv", drop=["patient_name"])
    assert report.clinical is not None
    n = report.clinical["rows"]
    assert report.clinical == {"rows": n, "without_patient_id": 0, "stored": n, "duplicates": 0, "skipped": False}
    assert _count(sqlite_node) == n
    again = upload(up, None, url, token, clinical=cohort / "clinical.csv", drop=["patient_name"])
    assert again.clinical is not None and again.clinical["skipped"] is True
    up.journal_path.unlink()
    fresh = upload(up, None, url, token, clinical=cohort / "clinical.csv", drop=["patient_name"])
    assert fresh.clinical is not None and (fresh.clinical["stored"], fresh.clinical["duplicates"]) == (0, n)
    with sqlite_node.catalogue.session() as s:
        pseudonyms = set(s.scalars(select(ClinicalRecord.pseudonym)))
    assert pseudonyms == {up.pseudonymiser.patient(row["patient_id"])
                          for row in csv.DictReader((cohort / "clinical.csv").open(encoding="utf-8"))}

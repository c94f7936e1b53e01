"""The compliance record on a real node: fields asked once, contact and DPO, backup locations, documents filed by
sha256 (PDF only; symlinks, directories, missing files, fake PDFs and future dates refused, nothing changed),
file modes, concurrent changes, and the country codes shared with the Central Node."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import date
from pathlib import Path

import pytest

from incisive.central import residency as central_residency
from incisive.central import settings as central_settings
from incisive.common import countries
from incisive.common.errors import ConfigError, InputError, IntegrityError
from incisive.node.compliance import store
from incisive.node.home import Node
from tests.node.compliance import complete_record, make_pdf


def record_bytes(node: Node) -> bytes | None:
    path = store.compliance_dir(node.home) / "compliance.json"
    return path.read_bytes() if path.exists() else None


def test_countries_moved_and_still_importable_from_central() -> None:
    assert central_settings.check_country is countries.check_country
    assert central_settings.ISO_COUNTRIES is countries.ISO_COUNTRIES and len(countries.ISO_COUNTRIES) == 249
    assert central_residency.EU_EEA is countries.EU_EEA and central_residency.EU is countries.EU
    assert central_residency.in_eu_eea("no") and not central_residency.in_eu_eea("CH")
    assert countries.check_country(" el ") == "GR" and countries.check_country("uk") == "GB"
    with pytest.raises(InputError, match="not an ISO 3166-1 alpha-2"):
        countries.check_country("XX")


def test_empty_record_misses_every_required_fact(sqlite_node: Node) -> None:
    data = store.load(sqlite_node.home)
    assert data["schema"] == store.SCHEMA_VERSION and data["processors"] == []
    assert store.missing_fields(data) == ["contact", "dpo", "controller-name", "controller-address", "legal-basis",
                                          "retention-years", "node-country"]
    assert "node-country" not in store.missing_fields(data, tenant=True)


def test_fields_asked_once_and_stored(sqlite_node: Node) -> None:
    home = sqlite_node.home
    complete_record(home)
    store.set_field(home, "purposes-extra", "quality assurance of the imaging archive")
    data = store.load(home)
    assert store.missing_fields(data) == []
    assert data["controller"] == {"name": "Test Hospital Foundation", "address": "1 Hospital Street, 10115 Berlin"}
    assert data["fields"]["retention_years"] == 10 and data["node_country"] == "DE"
    assert data["fields"]["purposes_extra"].startswith("quality")
    assert data["contact"]["role"] == "technical contact" and data["dpo"]["email"] == "dpo@hospital.example"
    store.set_field(home, "purposes-extra", "")  # an optional field is cleared
    assert "purposes_extra" not in store.load(home)["fields"]
    store.set_contact(home, "Bob Ops", "bob@hospital.example", "technical contact")  # the DPO stays
    assert store.load(home)["dpo"]["name"] == "Dora Protect"
    folder = store.compliance_dir(home)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "compliance.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((folder / "compliance.json").read_text())["schema"] == 1


@pytest.mark.parametrize(("key", "value", "match"), [
    ("colour", "blue", "unknown field 'colour'"),
    ("node-country", "XX", "not an ISO 3166-1 alpha-2"),
    ("node-country", "Germany", "not an ISO 3166-1 alpha-2"),
    ("retention-years", "ten", "whole number of years"),
    ("retention-years", "0", "between 1 and 100"),
    ("retention-years", "500", "between 1 and 100"),
    ("legal-basis", "  ", "must not be empty"),
    ("controller-name", "x" * 2001, "longer than 2000"),
    ("controller-name", "evil\x1b[31m", "control characters"),
])
def test_bad_fields_refused_nothing_changed(sqlite_node: Node, key: str, value: str, match: str) -> None:
    store.set_field(sqlite_node.home, "controller-name", "Test Hospital Foundation")
    before = record_bytes(sqlite_node)
    with pytest.raises(InputError, match=match):
        store.set_field(sqlite_node.home, key, value)
    assert record_bytes(sqlite_node) == before


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"email": "not-an-address"}, "--email is not an e-mail address"),
    ({"name": ""}, "--name must not be empty"),
    ({"dpo_name": "Dora"}, "--dpo-name and --dpo-email go together"),
    ({"dpo_name": "Dora", "dpo_email": "dora@"}, "--dpo-email is not an e-mail"),
])
def test_bad_contact_refused(sqlite_node: Node, kwargs: dict[str, str], match: str) -> None:
    args = {"name": "Ann", "email": "ann@hospital.example", "role": "technical contact", **kwargs}
    with pytest.raises(InputError, match=match):
        store.set_contact(sqlite_node.home, **args)
    assert record_bytes(sqlite_node) is None


def test_backup_location(sqlite_node: Node) -> None:
    store.set_backup_location(sqlite_node.home, "usb", "de")
    assert store.load(sqlite_node.home)["backup_locations"] == {"usb": "DE"}
    with pytest.raises(InputError, match="not an ISO 3166-1"):
        store.set_backup_location(sqlite_node.home, "usb", "ZZ")
    with pytest.raises(InputError, match="no processor with id 'nobody'"):
        store.set_backup_location(sqlite_node.home, "usb", "US", processor="nobody")
    with pytest.raises(InputError, match="backup target name"):
        store.set_backup_location(sqlite_node.home, "../etc", "DE")
    assert store.load(sqlite_node.home)["backup_locations"] == {"usb": "DE"}


def test_document_filed_by_sha256(sqlite_node: Node, tmp_path: Path) -> None:
    source = make_pdf(tmp_path / "dpa.pdf", "dpa")
    doc = store.store_document(sqlite_node.home, source, "dpa")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert doc == {"kind": "dpa", "sha256": digest, "file": f"documents/{digest}.pdf", "size": source.stat().st_size}
    filed = store.document_path(sqlite_node.home, doc)
    assert filed.read_bytes() == source.read_bytes() and filed.stat().st_mode & 0o777 == 0o600
    assert store.document_problem(sqlite_node.home, doc) is None
    assert store.store_document(sqlite_node.home, source, "dpa") == doc  # the same bytes: the same file
    filed.write_bytes(b"%PDF-1.4 changed")
    assert "does not match its sha256" in str(store.document_problem(sqlite_node.home, doc))
    filed.unlink()
    assert "is missing" in str(store.document_problem(sqlite_node.home, doc))


def test_document_record_outside_the_documents_refused(sqlite_node: Node, tmp_path: Path) -> None:
    outside = {"kind": "dpa", "sha256": "0" * 64, "file": "../../incisive.toml"}
    with pytest.raises(IntegrityError, match="points outside"):
        store.document_path(sqlite_node.home, outside)
    assert "points outside" in str(store.document_problem(sqlite_node.home, outside))
    with pytest.raises(IntegrityError):
        store.document_path(sqlite_node.home, {"file": "documents/notes.pdf"})


def test_bad_documents_refused(sqlite_node: Node, tmp_path: Path) -> None:
    home = sqlite_node.home
    fake = tmp_path / "fake.pdf"
    fake.write_bytes(b"<html>not a pdf</html>")
    word = make_pdf(tmp_path / "contract.docx")
    real = make_pdf(tmp_path / "real.pdf")
    link = tmp_path / "link.pdf"
    link.symlink_to(real)
    folder = tmp_path / "folder.pdf"
    folder.mkdir()
    fifo = tmp_path / "pipe.pdf"
    os.mkfifo(fifo)
    cases = [(fake, "not a PDF \\(no %PDF- header\\)"), (word, "is not a .pdf"), (link, "symbolic link"),
             (folder, "is a directory"), (fifo, "not a regular file"), (tmp_path / "gone.pdf", "no such file")]
    for path, match in cases:
        with pytest.raises(InputError, match=match):
            store.store_document(home, path, "dpa")
    with pytest.raises(InputError, match="document kind"):
        store.store_document(home, real, "invoice")
    documents = store.compliance_dir(home) / "documents"
    assert not documents.exists() or list(documents.iterdir()) == []


def test_dates(sqlite_node: Node) -> None:
    assert store.parse_date("2026-01-10", "--dpa-signed", today=date(2026, 12, 1)) == date(2026, 1, 10)
    with pytest.raises(InputError, match="--dpa-signed 2027-01-01 is in the future"):
        store.parse_date("2027-01-01", "--dpa-signed", today=date(2026, 12, 1))
    with pytest.raises(InputError, match="is not a date"):
        store.parse_date("10/01/2026", "--dpa-signed")


def test_unreadable_or_foreign_record_is_a_config_error(sqlite_node: Node) -> None:
    path = store.compliance_dir(sqlite_node.home) / "compliance.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable compliance record"):
        store.load(sqlite_node.home)
    path.write_text(json.dumps({"schema": 99}))
    with pytest.raises(ConfigError, match="not schema version 1"):
        store.load(sqlite_node.home)


def test_concurrent_changes_all_land(sqlite_node: Node) -> None:
    """Each change is a locked read-modify-write: twenty writers at once lose nothing."""
    errors: list[BaseException] = []

    def locate(i: int) -> None:
        try:
            store.set_backup_location(sqlite_node.home, f"target-{i}", "DE")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=locate, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.load(sqlite_node.home)["backup_locations"]) == 20

"""The node's compliance record: ``<node>/compliance/compliance.json`` and the documents filed with it.

```
<node>/compliance/compliance.json          contact, DPO, controller, the fields asked once, node country, backup
                                           target countries, processors (schema version 1)
<node>/compliance/documents/<sha256>.pdf   contracts and assessments, copied in (0600), named by their content
```
What the system can know (data, measures, recipients) is never typed here: the RoPA computes it
(:mod:`incisive.node.compliance.ropa`). What it cannot know (who the controller is, the legal basis, how long
data is kept, where a backup drive sits) is asked once with ``incisive compliance set`` and stored; an unset
required field is reported as missing by the RoPA and as a failing finding by ``incisive compliance check``.

Every change is a read-modify-write under a lock (``compliance/.lock``), written with one durable atomic write.
Nothing stored here is PHI: names and addresses of the controller, its contact person, DPO and processors.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from incisive.common.countries import check_country
from incisive.common.errors import ConfigError, InputError, IntegrityError
from incisive.common.fsio import atomic_write_bytes, atomic_write_text, exclusive_lock

__all__ = [
    "DOCUMENT_KINDS", "FIELDS", "SCHEMA_VERSION", "FieldSpec", "compliance_dir", "document_path", "document_problem",
    "file_document", "load", "missing_fields", "parse_date", "read_document", "set_backup_location", "set_contact",
    "set_field", "store_document", "update",
]

COMPLIANCE_DIR = "compliance"
STATE_FILE = "compliance.json"
DOCUMENTS_DIR = "documents"
SCHEMA_VERSION = 1
DOCUMENT_KINDS = ("dpa", "scc", "tia", "other")
MAX_DOCUMENT_BYTES = 64 << 20
MAX_TEXT = 2000
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TARGET = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class FieldSpec:
    """A fact only a person can give, asked once (``incisive compliance set KEY VALUE``)."""

    key: str  # as typed: controller-name
    title: str
    required: bool
    kind: str = "text"  # text | years | country
    where: str = "fields"  # fields | controller | top


FIELDS: dict[str, FieldSpec] = {f.key: f for f in (
    FieldSpec("controller-name", "Controller (the data provider's legal entity)", True, where="controller"),
    FieldSpec("controller-address", "Controller's postal address", True, where="controller"),
    FieldSpec("legal-basis", "Legal basis: Art. 6(1) and the Art. 9(2) condition (and national law)", True),
    FieldSpec("retention-years", "Retention period of the pseudonymised data, in years", True, kind="years"),
    FieldSpec("node-country", "Country where the node's machine stands (ISO 3166-1 alpha-2)", True,
              kind="country", where="top"),
    FieldSpec("purposes-extra", "Purposes beyond the node policy (free text)", False),
    FieldSpec("data-subjects-extra", "Categories of data subjects beyond patients (free text)", False),
    FieldSpec("recipients-extra", "Recipients beyond the platform and the researchers of the audit chain", False),
    FieldSpec("supervisory-authority", "Competent supervisory authority (for breach notifications)", False),
    FieldSpec("dpia", "Reference of the data protection impact assessment (Art. 35)", False),
)}


def _field_name(key: str) -> str:
    return key.removeprefix("controller-").replace("-", "_")


def compliance_dir(home: Path) -> Path:
    return home / COMPLIANCE_DIR


def _empty() -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "contact": None, "dpo": None, "controller": None, "fields": {},
            "node_country": None, "backup_locations": {}, "processors": []}


def load(home: Path) -> dict[str, Any]:
    """The compliance record (empty defaults when nothing was recorded yet)."""
    path = compliance_dir(home) / STATE_FILE
    data = _empty()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return data
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable compliance record {path}: {type(exc).__name__}") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA_VERSION:
        raise ConfigError(f"compliance record {path} is not schema version {SCHEMA_VERSION}")
    data.update(raw)
    return data


@contextmanager
def update(home: Path) -> Iterator[dict[str, Any]]:
    """The record to change in place; written back (durably, atomically) when the block ends without error."""
    folder = compliance_dir(home)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with exclusive_lock(folder / ".lock"):
        data = load(home)
        yield data
        atomic_write_text(folder / STATE_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=0o600)


def clean_text(value: str, what: str, limit: int = MAX_TEXT) -> str:
    text = value.strip()
    if not text:
        raise InputError(f"{what} must not be empty")
    if len(text) > limit:
        raise InputError(f"{what} is longer than {limit} characters")
    if _CONTROL.search(text):
        raise InputError(f"{what} contains control characters")
    return text


def _email(value: str, what: str) -> str:
    text = clean_text(value, what, 254)
    if not _EMAIL.fullmatch(text):
        raise InputError(f"{what} is not an e-mail address (name@example.org)")
    return text


def parse_date(value: str | date, what: str, today: date | None = None) -> date:
    """An ISO date (YYYY-MM-DD), never in the future."""
    if isinstance(value, date):
        day = value
    else:
        try:
            day = date.fromisoformat(value.strip())
        except ValueError:
            raise InputError(f"{what} {value.strip()[:16]!r} is not a date (YYYY-MM-DD)") from None
    if day > (today or date.today()):
        raise InputError(f"{what} {day.isoformat()} is in the future")
    return day


def set_contact(home: Path, name: str, email: str, role: str, dpo_name: str | None = None,
                dpo_email: str | None = None) -> dict[str, Any]:
    """The node's designated contact person (and optionally the DPO); returns the record."""
    contact = {"name": clean_text(name, "--name", 200), "email": _email(email, "--email"),
               "role": clean_text(role, "--role", 200)}
    if (dpo_name is None) != (dpo_email is None):
        raise InputError("--dpo-name and --dpo-email go together")
    dpo = None
    if dpo_name is not None and dpo_email is not None:
        dpo = {"name": clean_text(dpo_name, "--dpo-name", 200), "email": _email(dpo_email, "--dpo-email")}
    with update(home) as data:
        data["contact"] = contact
        if dpo is not None:
            data["dpo"] = dpo
        return data


def set_field(home: Path, key: str, value: str) -> dict[str, Any]:
    """Record one asked-once field (``FIELDS``); an empty value clears an optional one."""
    spec = FIELDS.get(key)
    if spec is None:
        raise InputError(f"unknown field {key!r}; known: {', '.join(FIELDS)}, backup-location")
    stored: Any
    if not value.strip() and not spec.required:
        stored = None
    elif spec.kind == "country":
        stored = check_country(value, key)
    elif spec.kind == "years":
        try:
            stored = int(value.strip())
        except ValueError:
            raise InputError(f"{key} must be a whole number of years") from None
        if not 1 <= stored <= 100:
            raise InputError(f"{key} must be between 1 and 100 years")
    else:
        stored = clean_text(value, key)
    with update(home) as data:
        if spec.where == "top":
            data[_field_name(key)] = stored
        elif spec.where == "controller":
            controller = dict(data.get("controller") or {})
            controller[_field_name(key)] = stored
            data["controller"] = controller
        elif stored is None:
            data["fields"].pop(_field_name(key), None)
        else:
            data["fields"][_field_name(key)] = stored
        return data


def set_backup_location(home: Path, target: str, country: str, processor: str | None = None) -> dict[str, Any]:
    """Where a backup target's copies are kept (``{target: country}``); ``processor``: who keeps them for us."""
    if not _TARGET.fullmatch(target):
        raise InputError("a backup target name is lower-case letters, digits, '-' or '_' (max 32)")
    code = check_country(country, "backup-location country")
    with update(home) as data:
        if processor is not None and not any(p["id"] == processor for p in data["processors"]):
            raise InputError(f"no processor with id {processor!r} (incisive compliance processor ls)")
        data["backup_locations"][target] = code
        links = data.setdefault("backup_processors", {})
        if processor is None:
            links.pop(target, None)
        else:
            links[target] = processor
        return data


def field_value(data: dict[str, Any], key: str) -> Any:
    spec = FIELDS[key]
    if spec.where == "top":
        return data.get(_field_name(key))
    if spec.where == "controller":
        return (data.get("controller") or {}).get(_field_name(key))
    return data["fields"].get(_field_name(key))


def missing_fields(data: dict[str, Any], tenant: bool = False) -> list[str]:
    """Required facts not recorded yet: ``contact``, ``dpo`` and the required :data:`FIELDS` keys.

    ``tenant``: a Central Node tenant's country is the Central Node's (``central.toml``), not asked."""
    missing = [name for name in ("contact", "dpo") if not data.get(name)]
    for key, spec in FIELDS.items():
        if spec.required and field_value(data, key) in (None, "") and not (tenant and key == "node-country"):
            missing.append(key)
    return missing


# -- documents ------------------------------------------------------------------------------------------------
def _read_document(source: Path, what: str) -> bytes:
    """The bytes of a regular PDF file given by the operator: no symlink, no directory, no device, no FIFO."""
    try:
        info = os.lstat(source)
    except FileNotFoundError:
        raise InputError(f"{what}: no such file {source.name!r}") from None
    except OSError as exc:
        raise InputError(f"{what}: cannot read {source.name!r} ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise InputError(f"{what}: {source.name!r} is a symbolic link; give the document itself")
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{what}: {source.name!r} is a directory, not a document")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{what}: {source.name!r} is not a regular file")
    if info.st_size > MAX_DOCUMENT_BYTES:
        raise InputError(f"{what}: {source.name!r} is larger than {MAX_DOCUMENT_BYTES >> 20} MiB")
    if source.suffix.lower() != ".pdf":
        raise InputError(f"{what}: {source.name!r} is not a .pdf (documents are filed as PDF)")
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"{what}: cannot open {source.name!r} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InputError(f"{what}: {source.name!r} is larger than {MAX_DOCUMENT_BYTES >> 20} MiB")
    if not data.startswith(b"%PDF-"):
        raise InputError(f"{what}: {source.name!r} is not a PDF (no %PDF- header)")
    return data


def read_document(source: Path, kind: str, what: str = "--document") -> tuple[dict[str, Any], bytes]:
    """Check ``source`` and read it: its record (kind, sha256, file, size) and bytes; nothing is written yet."""
    if kind not in DOCUMENT_KINDS:
        raise InputError(f"document kind must be one of {', '.join(DOCUMENT_KINDS)}")
    data = _read_document(source.expanduser(), what)
    digest = hashlib.sha256(data).hexdigest()
    return {"kind": kind, "sha256": digest, "file": f"{DOCUMENTS_DIR}/{digest}.pdf", "size": len(data)}, data


def file_document(home: Path, doc: dict[str, Any], data: bytes) -> None:
    """Write a document read by :func:`read_document` to ``compliance/documents/<sha256>.pdf`` (0600)."""
    target = document_path(home, doc)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == doc["sha256"]):
        atomic_write_bytes(target, data, mode=0o600)


def store_document(home: Path, source: Path, kind: str, what: str = "--document") -> dict[str, Any]:
    """Copy ``source`` into ``compliance/documents/<sha256>.pdf`` (0600); returns its record."""
    doc, data = read_document(source, kind, what)
    file_document(home, doc, data)
    return doc


def document_path(home: Path, doc: dict[str, Any]) -> Path:
    """Where a filed document lives; :class:`IntegrityError` when its record points outside the documents."""
    folder = (compliance_dir(home) / DOCUMENTS_DIR).resolve()
    name = str(doc.get("file", ""))
    path = (compliance_dir(home) / name).resolve()
    if path.parent != folder or not re.fullmatch(r"[0-9a-f]{64}\.pdf", path.name):
        raise IntegrityError(f"document record {name[:80]!r} points outside compliance/{DOCUMENTS_DIR}")
    return path


def document_problem(home: Path, doc: dict[str, Any]) -> str | None:
    """``None`` when the filed document is there with its recorded sha256; else what is wrong."""
    try:
        path = document_path(home, doc)
    except IntegrityError as exc:
        return str(exc)
    if path.is_symlink() or not path.is_file():
        return f"{doc.get('kind')} document {path.name[:12]}… is missing"
    if hashlib.sha256(path.read_bytes()).hexdigest() != doc.get("sha256"):
        return f"{doc.get('kind')} document {path.name[:12]}… does not match its sha256 (changed)"
    return None

"""The processor register (GDPR Art. 28): who processes this node's data on the controller's behalf.

Each entry records the contract (the data-processing agreement, its date, the document filed with its sha256),
the processor's country, the transfer safeguards where that country is outside the EU/EEA (standard contractual
clauses, Art. 46(2)(c), and a transfer impact assessment document), and the Art. 28(3) checklist: whether the
contract stipulates each of the items below. :func:`problems` is what ``incisive compliance check`` reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from incisive.common.countries import check_country, in_eu_eea
from incisive.common.errors import InputError
from incisive.node.compliance import store
from incisive.node.home import slugify

__all__ = ["CHECKLIST", "add_processor", "get_processor", "list_processors", "parse_checklist", "problems",
           "remove_processor", "update_processor"]

# Art. 28(3) GDPR: what the contract must set out (first sentence) and stipulate (points a-h)
CHECKLIST: dict[str, str] = {
    "subject": "subject-matter of the processing",
    "duration": "duration of the processing",
    "nature": "nature of the processing",
    "purpose": "purpose of the processing",
    "data_types": "type of personal data",
    "subject_categories": "categories of data subjects",
    "instructions": "processes only on documented instructions, incl. transfers (a)",
    "confidentiality": "persons authorised are bound to confidentiality (b)",
    "security": "takes the Art. 32 security measures (c)",
    "sub_processors": "engages sub-processors only with authorisation, same obligations (d)",
    "assistance": "assists with data-subject rights and Art. 32-36 duties (e, f)",
    "deletion_return": "deletes or returns all data at the end of the services (g)",
    "audits": "makes information available and allows audits (h)",
}
_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0"}


def parse_checklist(items: Iterable[str], start: Mapping[str, bool] | None = None) -> dict[str, bool]:
    """``item=yes|no`` pairs (``all=yes`` sets every item) over ``start`` (default: every item no)."""
    result = {key: bool((start or {}).get(key, False)) for key in CHECKLIST}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip().replace("-", "_"), value.strip().lower()
        if not sep or value not in _YES | _NO:
            raise InputError(f"--checklist {item[:40]!r}: write ITEM=yes or ITEM=no")
        if key == "all":
            result = dict.fromkeys(CHECKLIST, value in _YES)
        elif key in CHECKLIST:
            result[key] = value in _YES
        else:
            raise InputError(f"--checklist: unknown item {key[:40]!r}; items: all, {', '.join(CHECKLIST)}")
    return result


def _slug(name: str) -> str:
    return slugify(name)[:40]


def _read(document: Path | None, tia: Path | None, others: Sequence[Path]) -> list[tuple[dict[str, Any], bytes]]:
    """Every document checked and read before anything is written (a refused one files none)."""
    docs = [store.read_document(document, "dpa", "--document")] if document is not None else []
    if tia is not None:
        docs.append(store.read_document(tia, "tia", "--tia"))
    return docs + [store.read_document(other, "other", "--other") for other in others]


def get_processor(data: Mapping[str, Any], ident: str) -> dict[str, Any]:
    """A processor by id or by exact name; :class:`InputError` naming the known ids otherwise."""
    for p in data["processors"]:
        if ident in (p["id"], p["name"]):
            found: dict[str, Any] = p
            return found
    known = ", ".join(p["id"] for p in data["processors"]) or "none"
    raise InputError(f"no processor {ident[:60]!r} (known: {known})")


def add_processor(home: Path, name: str, service: str, country: str, dpa_signed: str | date, document: Path,
                  scc: bool = False, tia: Path | None = None, checklist: Sequence[str] = (),
                  others: Sequence[Path] = (), today: date | None = None) -> dict[str, Any]:
    """Register a processor with its signed DPA (``document``, a PDF) and optional SCC flag, TIA and checklist."""
    clean_name = store.clean_text(name, "processor name", 200)
    entry: dict[str, Any] = {
        "name": clean_name, "service": store.clean_text(service, "--service", 200),
        "country": check_country(country, "--country"),
        "dpa_signed": store.parse_date(dpa_signed, "--dpa-signed", today).isoformat(),
        "scc": bool(scc), "checklist": parse_checklist(checklist),
    }
    docs = _read(document, tia, others)
    entry["documents"] = [doc for doc, _ in docs]
    with store.update(home) as data:
        if any(p["name"].casefold() == clean_name.casefold() for p in data["processors"]):
            raise InputError(f"a processor named {clean_name[:60]!r} is registered already (processor update)")
        for doc, content in docs:
            store.file_document(home, doc, content)
        ident, n = _slug(clean_name), 2
        taken = {p["id"] for p in data["processors"]}
        while ident in taken:
            ident, n = f"{_slug(clean_name)}-{n}", n + 1
        data["processors"].append({"id": ident, **entry})
        return {"id": ident, **entry}


def update_processor(home: Path, ident: str, *, service: str | None = None, country: str | None = None,
                     dpa_signed: str | None = None, document: Path | None = None, scc: bool | None = None,
                     tia: Path | None = None, checklist: Sequence[str] = (), others: Sequence[Path] = (),
                     today: date | None = None) -> dict[str, Any]:
    """Change what is given; a new ``document`` replaces the DPA, a new ``tia`` the TIA (old files stay filed)."""
    changes: dict[str, Any] = {}
    if service is not None:
        changes["service"] = store.clean_text(service, "--service", 200)
    if country is not None:
        changes["country"] = check_country(country, "--country")
    if dpa_signed is not None:
        changes["dpa_signed"] = store.parse_date(dpa_signed, "--dpa-signed", today).isoformat()
    if scc is not None:
        changes["scc"] = scc
    docs = _read(document, tia, others)
    new_docs = [doc for doc, _ in docs]
    with store.update(home) as data:
        entry = get_processor(data, ident)
        for doc, content in docs:
            store.file_document(home, doc, content)
        entry.update(changes)
        if checklist:
            entry["checklist"] = parse_checklist(checklist, entry.get("checklist"))
        replaced = {d["kind"] for d in new_docs} - {"other"}
        entry["documents"] = [d for d in entry["documents"] if d["kind"] not in replaced] + new_docs
        return dict(entry)


def remove_processor(home: Path, ident: str) -> dict[str, Any]:
    """Take a processor off the register (its filed documents stay, as evidence of the past contract)."""
    with store.update(home) as data:
        entry = get_processor(data, ident)
        data["processors"] = [p for p in data["processors"] if p is not entry]
        links = data.get("backup_processors", {})
        for target in [t for t, pid in links.items() if pid == entry["id"]]:
            links.pop(target)
        return entry


def list_processors(home: Path) -> list[dict[str, Any]]:
    """Every processor with its EU/EEA status and transfer safeguards as recorded."""
    out = []
    for p in store.load(home)["processors"]:
        kinds = {d["kind"] for d in p["documents"]}
        out.append({**p, "eu_eea": in_eu_eea(p["country"]), "has_dpa": "dpa" in kinds, "has_tia": "tia" in kinds,
                    "checklist_missing": [k for k in CHECKLIST if not p.get("checklist", {}).get(k)]})
    return out


def problems(home: Path, entry: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(code, message, fix) for each thing wrong with one processor's record; empty when it is complete."""
    pid, found = entry["id"], []
    kinds = {d["kind"] for d in entry["documents"]}
    if "dpa" not in kinds:
        found.append(("processor.no_dpa", "no data-processing agreement filed",
                      f"incisive compliance processor update {pid} --document DPA.pdf"))
    for doc in entry["documents"]:
        problem = store.document_problem(home, doc)
        if problem:
            found.append(("processor.document_missing", problem,
                          f"file the document again: incisive compliance processor update {pid} --document|--tia"))
    missing = [k for k in CHECKLIST if not entry.get("checklist", {}).get(k)]
    if missing:
        found.append(("processor.checklist_incomplete",
                      f"the contract does not record Art. 28(3): {', '.join(missing)}",
                      f"incisive compliance processor update {pid} --checklist ITEM=yes (after checking the "
                      "contract)"))
    if not in_eu_eea(entry["country"]):
        if not entry.get("scc"):
            tia = "" if "tia" in kinds else " and a transfer impact assessment"
            found.append(("processor.non_eu_without_scc",
                          f"in {entry['country']}, outside the EU/EEA: a transfer (GDPR Chapter V) without standard "
                          f"contractual clauses{tia}",
                          f"incisive compliance processor update {pid} --scc --tia TIA.pdf, or a processor in the "
                          "EU/EEA"))
        elif "tia" not in kinds:
            found.append(("processor.non_eu_without_tia",
                          f"in {entry['country']}, outside the EU/EEA: SCC signed but no transfer impact assessment "
                          "filed", f"incisive compliance processor update {pid} --tia TIA.pdf"))
    return found

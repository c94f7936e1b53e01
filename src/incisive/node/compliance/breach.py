"""Personal-data breaches (GDPR Art. 33/34): open → phased updates → close, one JSON file per breach.

``<node>/compliance/breaches/<id>.json`` (ids like ``br-2026-12-01-1a2b``, from the day of discovery), written
atomically (:mod:`incisive.common.fsio`) under a lock. Opening starts the 72 h clock from *awareness*
(``discovered_at``, never in the future); the record holds the nature, the categories and approximate numbers of
data subjects and records (computed from the catalogue for the affected studies/series:
:mod:`incisive.node.compliance.breach_scope`), likely consequences, measures taken or proposed, phased updates
with their times, when the authority and the data subjects were notified, and the reasons for delay (required
when the authority was notified after the deadline, or when an un-notified breach is closed after it).

Every step is appended to the node's audit chain with counts, field names and a keyed digest of the scope only:
never a UID and never the operator's free text. Free text that looks like a DICOM UID or a patient pseudonym is
refused (the affected data is named with ``--studies``/``--series``, counted, never quoted). The report (Art.
33(3)) is :mod:`incisive.node.compliance.breach_report`; :func:`open_findings` feeds ``compliance check``,
:func:`heartbeat_summary` the agent's heartbeat and ``node status``.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from incisive.common.audit_log import NodeAudit
from incisive.common.errors import InputError
from incisive.common.fsio import atomic_write_text, exclusive_lock
from incisive.common.logging import get_logger
from incisive.node.compliance import breach_scope as scope_mod
from incisive.node.compliance import store
from incisive.node.home import Node

log = get_logger("compliance")
SCHEMA = 1
DEADLINE = timedelta(hours=72)
NATURES = ("confidentiality", "integrity", "availability")
ID_RE = re.compile(r"br-\d{4}-\d{2}-\d{2}-[0-9a-f]{4}")
MAX_TEXT = 4000
HEARTBEAT_MAX = 20
_UID_LIKE = re.compile(r"(?<![\d.])(?:\d+(?:\.\d+){4,}|2\.25\.\d{6,})(?![\d])")
_PSEUDONYM_LIKE = re.compile(r"\bP[A-Z2-7]{16}\b")
REQUIRED = ("id", "status", "discovered_at", "deadline")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time (``2026-12-01T09:00Z``, ``2026-12-01 10:00+01:00``; without a zone: this machine's)."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{what}: not an ISO 8601 time (e.g. 2026-12-01T09:00Z)") from None
    return (t.astimezone() if t.tzinfo is None else t).astimezone(UTC)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def breach_dir(node: Node) -> Path:
    return node.home / "compliance" / "breaches"


def _path(node: Node, breach_id: str) -> Path:
    if not ID_RE.fullmatch(breach_id):
        raise InputError("unknown breach id (ids look like br-2026-12-01-1a2b: incisive compliance breach ls)")
    return breach_dir(node) / f"{breach_id}.json"


@contextlib.contextmanager
def _locked(node: Node) -> Iterator[None]:
    directory = breach_dir(node)
    directory.parent.mkdir(mode=0o700, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    with exclusive_lock(directory / ".lock"):
        yield


def _write(path: Path, record: dict[str, Any], exclusive: bool = False) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600, exclusive=exclusive)


def load(node: Node, breach_id: str) -> dict[str, Any]:
    path = _path(node, breach_id)
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no breach {breach_id} on this node (incisive compliance breach ls)") from None
    except (OSError, ValueError):
        raise InputError(f"breach file of {breach_id} is unreadable") from None
    return record


def _records(node: Node) -> Iterator[tuple[str, dict[str, Any] | None]]:
    directory = breach_dir(node)
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("br-*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            valid = isinstance(record, dict) and all(isinstance(record.get(k), str) for k in REQUIRED)
            yield path.stem, record if valid else None
        except (OSError, ValueError):
            yield path.stem, None


def _text(value: str, what: str) -> str:
    text = store.clean_text(value, what, MAX_TEXT)
    if _UID_LIKE.search(text) or _PSEUDONYM_LIKE.search(text):
        raise InputError(f"{what} looks like it quotes a DICOM UID or a patient pseudonym: name the affected data "
                         "with --studies/--series (counted in the record, never quoted); nothing was recorded")
    return text


def _natures(values: Sequence[str]) -> list[str]:
    out = scope_mod.split_uids(values)
    bad = [v for v in out if v not in NATURES]
    if bad:
        raise InputError(f"unknown breach nature {bad[0]!r}: one or more of {', '.join(NATURES)}")
    return out


def _count(value: int | None, what: str) -> int | None:
    if value is not None and value < 0:
        raise InputError(f"{what} must be 0 or more")
    return value


def _check_time(t: datetime, record: dict[str, Any], now: datetime, what: str) -> str:
    if t > now:
        raise InputError(f"{what} ({iso(t)}) is in the future; nothing was recorded")
    if t < _time(record["discovered_at"]):
        raise InputError(f"{what} ({iso(t)}) is before the breach was discovered ({record['discovered_at']}); "
                         "nothing was recorded")
    return iso(t)


def _apply_scope(node: Node, record: dict[str, Any], scope: dict[str, Any]) -> None:
    record["scope"] = merged = scope_mod.merge_scopes(record.get("scope") or {}, scope)
    measured = scope_mod.measure(node, merged)
    record["numbers"], record["categories"] = measured["numbers"], measured["categories"]
    record["scope_digest"] = (None if scope_mod.is_empty(merged) else
                              node.pseudonymiser.digest("breach-scope", json.dumps(merged, sort_keys=True)))


def _audit(node: Node, action: str, record: dict[str, Any], fields: list[str], **extra: Any) -> None:
    details = {"fields": fields, "deadline": record["deadline"], "nature": record.get("nature") or [],
               "numbers": record.get("numbers"), "approximate": record.get("approximate"),
               "scope_digest": record.get("scope_digest"), **extra}
    NodeAudit(node.home).append("local", action, target=record["id"], node=node.settings.node_id,
                                details=details)


def _new_id(node: Node, discovered: datetime) -> str:
    for _ in range(100):
        candidate = f"br-{discovered.strftime('%Y-%m-%d')}-{secrets.token_hex(2)}"
        if not (breach_dir(node) / f"{candidate}.json").exists():
            return candidate
    raise InputError("could not pick a free breach id")  # pragma: no cover - 65536 per day


def open_breach(node: Node, summary: str, *, discovered: datetime | None = None, nature: Sequence[str] = (),
                studies: Sequence[str] = (), series: Sequence[str] = (), all_data: bool = False,
                approx_subjects: int | None = None, approx_records: int | None = None,
                consequences: str | None = None, measures: str | None = None,
                now: datetime | None = None) -> dict[str, Any]:
    """Record a new breach; the 72 h clock runs from ``discovered`` (default now; never in the future)."""
    now = now or utcnow()
    discovered = discovered or now
    if discovered > now:
        raise InputError(f"the discovery time ({iso(discovered)}) is in the future; nothing was recorded")
    stamp = iso(now)
    record: dict[str, Any] = {
        "schema": SCHEMA, "id": "", "status": "open", "summary": _text(summary, "--summary"),
        "nature": _natures(nature), "discovered_at": iso(discovered), "opened_at": stamp,
        "deadline": iso(discovered + DEADLINE), "scope": {}, "scope_digest": None, "numbers": None,
        "categories": {"subjects": [], "data": []},
        "approximate": {"subjects": _count(approx_subjects, "--approx-subjects"),
                        "records": _count(approx_records, "--approx-records")},
        "information": [], "consequences": [], "measures": [], "delay_reasons": [],
        "dpa_notified_at": None, "subjects_notified_at": None, "closed_at": None, "updates": []}
    fields = ["summary"] + (["nature"] if record["nature"] else [])
    if consequences is not None:
        record["consequences"].append({"at": stamp, "recorded_at": stamp, "text": _text(consequences,
                                                                                        "--consequences")})
        fields.append("consequences")
    if measures is not None:
        record["measures"].append({"at": stamp, "recorded_at": stamp, "kind": "taken",
                                   "text": _text(measures, "--measures")})
        fields.append("measures")
    scope = scope_mod.resolve_scope(node, scope_mod.split_uids(studies), scope_mod.split_uids(series), all_data)
    _apply_scope(node, record, scope)
    if not scope_mod.is_empty(scope):
        fields.append("scope")
    with _locked(node):
        record["id"] = _new_id(node, discovered)
        record["updates"].append({"seq": 0, "step": "open", "at": record["discovered_at"], "recorded_at": stamp,
                                  "fields": fields})
        _audit(node, "breach.open", record, fields, late_open=discovered + DEADLINE < now)
        _write(_path(node, record["id"]), record, exclusive=True)
    return record


def _delay_given(record: dict[str, Any], delay_reason: str | None) -> bool:
    return bool(record["delay_reasons"]) or delay_reason is not None


def update_breach(node: Node, breach_id: str, *, at: datetime | None = None, information: str | None = None,
                  measures: str | None = None, proposed: str | None = None, consequences: str | None = None,
                  delay_reason: str | None = None, dpa_notified_at: datetime | None = None,
                  subjects_notified_at: datetime | None = None, nature: Sequence[str] = (),
                  studies: Sequence[str] = (), series: Sequence[str] = (), all_data: bool = False,
                  approx_subjects: int | None = None, approx_records: int | None = None,
                  now: datetime | None = None) -> dict[str, Any]:
    """One phased update (Art. 33(4)); every time in it between discovery and now. Nothing is written when any
    part is refused."""
    now = now or utcnow()
    stamp = iso(now)
    with _locked(node):
        record = load(node, breach_id)
        if record["status"] != "open":
            raise InputError(f"breach {breach_id} is closed; nothing was recorded")
        when = _check_time(at or now, record, now, "--at")
        fields: list[str] = []
        texts = {"information": information, "consequences": consequences, "measures": measures,
                 "proposed": proposed, "delay_reasons": delay_reason}
        flags = {"information": "--info", "consequences": "--consequences", "measures": "--measures",
                 "proposed": "--proposed", "delay_reasons": "--delay-reason"}
        for kind, value in texts.items():
            if value is None:
                continue
            entry: dict[str, Any] = {"at": when, "recorded_at": stamp, "text": _text(value, flags[kind])}
            if kind in ("measures", "proposed"):
                entry["kind"] = "taken" if kind == "measures" else "proposed"
                kind = "measures"
            record[kind].append(entry)
            fields.append(kind)
        for key, told, flag in (("dpa_notified_at", dpa_notified_at, "--dpa-notified-at"),
                                ("subjects_notified_at", subjects_notified_at, "--subjects-notified-at")):
            if told is None:
                continue
            if record[key] is not None:
                raise InputError(f"{flag}: already recorded ({record[key]}); nothing was recorded")
            record[key] = _check_time(told, record, now, flag)
            fields.append(key)
        if dpa_notified_at is not None and dpa_notified_at > _time(record["deadline"]) \
                and not _delay_given(record, delay_reason):
            late = (dpa_notified_at - _time(record["deadline"])).total_seconds() / 3600
            raise InputError(f"the authority was notified {late:.1f} h after the 72 h deadline: give the reasons "
                             "for the delay with --delay-reason (Art. 33(1)); nothing was recorded")
        if nature:
            record["nature"] = sorted(set(record["nature"]) | set(_natures(nature)))
            fields.append("nature")
        for key, count, flag in (("subjects", approx_subjects, "--approx-subjects"),
                                 ("records", approx_records, "--approx-records")):
            if count is not None:
                record["approximate"][key] = _count(count, flag)
                fields.append(f"approximate.{key}")
        scope = scope_mod.resolve_scope(node, scope_mod.split_uids(studies), scope_mod.split_uids(series), all_data)
        if not scope_mod.is_empty(scope):
            _apply_scope(node, record, scope)
            fields.append("scope")
        if not fields:
            raise InputError("nothing to update: give --info, --measures, --proposed, --consequences, "
                             "--delay-reason, --dpa-notified-at, --subjects-notified-at, --nature or a scope")
        record["updates"].append({"seq": len(record["updates"]), "step": "update", "at": when,
                                  "recorded_at": stamp, "fields": fields})
        _audit(node, "breach.update", record, fields, notified=record["dpa_notified_at"] is not None)
        _write(_path(node, breach_id), record)
    return record


def close_breach(node: Node, breach_id: str, *, at: datetime | None = None, measures: str | None = None,
                 delay_reason: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Close: refused without one measures entry, and past the deadline without notification unless the
    reasons for the delay are on record (or given here)."""
    now = now or utcnow()
    stamp = iso(now)
    with _locked(node):
        record = load(node, breach_id)
        if record["status"] != "open":
            raise InputError(f"breach {breach_id} is already closed ({record['closed_at']})")
        when = _check_time(at or now, record, now, "--at")
        fields: list[str] = []
        if measures is not None:
            record["measures"].append({"at": when, "recorded_at": stamp, "kind": "taken",
                                       "text": _text(measures, "--measures")})
            fields.append("measures")
        if not record["measures"]:
            raise InputError(f"breach {breach_id} has no measures entry: record what was done first "
                             f"(incisive compliance breach update {breach_id} --measures '…' or close --measures "
                             "'…'); nothing was recorded")
        if delay_reason is not None:
            record["delay_reasons"].append({"at": when, "recorded_at": stamp,
                                            "text": _text(delay_reason, "--delay-reason")})
            fields.append("delay_reasons")
        past = _time(when) > _time(record["deadline"])
        if record["dpa_notified_at"] is None and past and not record["delay_reasons"]:
            raise InputError(f"breach {breach_id} was not notified to the authority and the 72 h deadline passed "
                             f"({record['deadline']}): give the reasons with --delay-reason (Art. 33(1)); "
                             "nothing was recorded")
        record["status"], record["closed_at"] = "closed", when
        fields.append("status")
        record["updates"].append({"seq": len(record["updates"]), "step": "close", "at": when,
                                  "recorded_at": stamp, "fields": fields})
        _audit(node, "breach.close", record, fields, notified=record["dpa_notified_at"] is not None,
               measures=len(record["measures"]))
        _write(_path(node, breach_id), record)
    return record


def state(record: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The listing row of a breach: deadline, hours left (open ones), notified, overdue."""
    now = now or utcnow()
    deadline = _time(record["deadline"])
    is_open = record["status"] == "open"
    notified = record.get("dpa_notified_at") is not None
    return {"id": record["id"], "status": record["status"], "discovered_at": record["discovered_at"],
            "deadline": record["deadline"],
            "hours_left": round((deadline - now).total_seconds() / 3600, 1) if is_open else None,
            "notified": notified, "dpa_notified_at": record.get("dpa_notified_at"),
            "subjects_notified_at": record.get("subjects_notified_at"),
            "overdue": is_open and not notified and now > deadline,
            "late_notification": notified and _time(record["dpa_notified_at"]) > deadline,
            "closed_at": record.get("closed_at"), "numbers": record.get("numbers"),
            "measures": len(record.get("measures") or []), "summary": record.get("summary", "")}


def list_breaches(node: Node, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every breach (open first, then by discovery); an unreadable file is a row with status "unreadable"."""
    rows = [state(r, now) if r is not None else {"id": bid, "status": "unreadable"} for bid, r in _records(node)]
    return sorted(rows, key=lambda r: (r["status"] != "open", r.get("discovered_at") or "", r["id"]))


def open_breaches(node: Node, now: datetime | None = None) -> list[dict[str, Any]]:
    return sorted((r for r in list_breaches(node, now) if r["status"] == "open"), key=lambda r: r["deadline"])


def heartbeat_summary(node: Node, now: datetime | None = None) -> list[dict[str, Any]]:
    """Open breaches for the agent's heartbeat (ids, deadlines, hours left, notified): small, no free text."""
    return [{"id": r["id"], "deadline": r["deadline"], "hours_left": r["hours_left"], "notified": r["notified"]}
            for r in open_breaches(node, now)[:HEARTBEAT_MAX]]


def _finding(code: str, subject: str, message: str, fix: str) -> dict[str, Any]:
    return {"code": code, "severity": "fail", "subject": subject, "message": message, "fix": fix}


def open_findings(node: Node, now: datetime | None = None) -> list[dict[str, Any]]:
    """``compliance check`` findings: every open breach fails (the deadline in its message) until closed; an
    overdue one (72 h passed, authority not notified) has its own code; an unreadable breach file fails too."""
    out = []
    for bid, record in _records(node):
        if record is None:
            out.append(_finding("breach.unreadable", bid, f"breach file of {bid} is unreadable",
                                f"restore {bid}.json under compliance/breaches from a backup"))
            continue
        r = state(record, now)
        if r["status"] != "open":
            continue
        fix = (f"incisive compliance breach report {bid} --pdf {bid}.pdf; incisive compliance breach update {bid} "
               f"--dpa-notified-at TIME; incisive compliance breach close {bid}")
        if r["overdue"]:
            out.append(_finding("breach.overdue", bid, f"breach {bid}: the 72 h deadline to notify the supervisory "
                                f"authority passed at {r['deadline']} ({-r['hours_left']:.1f} h ago) without "
                                "notification (Art. 33(1))", fix + " --delay-reason '…' --measures '…'"))
        elif not r["notified"]:
            out.append(_finding("breach.open", bid, f"breach {bid} is open: notify the supervisory authority by "
                                f"{r['deadline']} ({r['hours_left']:.1f} h left) unless it is unlikely to result in "
                                "a risk (Art. 33(1))", fix))
        else:
            out.append(_finding("breach.open", bid, f"breach {bid} is open (deadline {r['deadline']}; authority "
                                f"notified at {r['dpa_notified_at']}): record the measures and close it",
                                f"incisive compliance breach close {bid} --measures '…'"))
    return out


def findings(node: Node) -> list[dict[str, Any]]:
    """Alias of :func:`open_findings` (the name ``compliance check`` looks for)."""
    return open_findings(node)

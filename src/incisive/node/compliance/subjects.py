"""Data-subject requests (GDPR Art. 15 access, Art. 17 erasure) on a node or a Central Node tenant.

The provider names the patient by the original identifier; the node computes the pseudonym with its own key
(:meth:`incisive.common.crypto.Pseudonymiser.patient`, the derivation the de-identifier applies to PatientID and
the clinical import to the id column), so the identifier never leaves the provider. On a Central Node tenant the
provider computes the pseudonym with its uploader's key (:func:`remote_lookup`, :func:`remote_erase`) and sends
only the pseudonym to ``/tenant/v1/subjects/{pseudonym}`` (:mod:`incisive.central.subjects_api`).

**Lookup** (:func:`lookup`): counts of what is held (:class:`incisive.node.erasure.Holding`: studies, series,
instances, objects, quarantined instances, clinical rows, inference results) and earlier erasures of the subject;
never a UID.

**Erase** (:func:`erase`), journaled in ``<node>/compliance/erasures/<id>.json`` (ids like ``se-2026-11-03-1a2b3c``):

1. the record is written in state ``erasing`` with the keyed digest of the pseudonym (never the identifier or the
   pseudonym), the counts held, the reason, who and when; while erasing it also holds the digest's salt, so that a
   resumed run can find the subject again;
2. the entry goes into the node's erasure list (:mod:`incisive.node.erasure`: digest + salt) and the audit chain
   gets ``subject.erase.start``;
3. the objects are removed from the store and the quarantine, then every row in one transaction (patient,
   studies, series, instances, quarantine items, clinical record, inference results);
4. the erasure list is written into every mounted directory backup repository; the audit chain gets
   ``subject.erase`` (digest and counts);
5. the record becomes ``done`` (the salt leaves it) with the backup status.

A process killed at any point (``kill -9``) leaves the record in state ``erasing``: :func:`resume` (``subject erase
--resume``) or the same erase again finishes it; every step is idempotent. Until then the subject is fenced in the
record, never half-erased without one.

**Backups** keep what they hold until retention removes the snapshots taken before the erase (``backup prune``,
the node's ``keep_last``/``keep_monthly``); a restore through ``incisive backup restore`` re-applies the erasure
list (:func:`incisive.node.erasure.reapply_at_restore`): from the snapshot's own configuration, and for a directory
repository from the list written there at erase time and from every later snapshot. An older *restic* snapshot
only knows the erasures before it: restore the newest one, or remove the subject again after the restore.

**Central Node tenant**: the objects are deleted like on a node. A crypto-erase per subject is not possible there:
the tenant has one data key for all its subjects (:mod:`incisive.common.keyring`), so destroying a key erases the
whole tenant (``incisive central tenant erase``). The tenant's backups keep the subject's ciphertext until
retention removes them, and a restore re-applies the erasure as on a node.

Test hook: ``INCISIVE_TEST_SUBJECT_KILL_AT=<step>`` (one of :data:`STEPS`) makes this process ``SIGKILL`` itself
right after that step. It exists only for ``tests/node/compliance/test_subjects.py``; nothing sets it in production.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from incisive.common import tls
from incisive.common.api_client import verify_setting
from incisive.common.audit import now_iso
from incisive.common.audit_log import NodeAudit
from incisive.common.errors import ConfigError, IncisiveError, InputError
from incisive.common.exit_codes import ExitCode
from incisive.common.fsio import atomic_write_text, exclusive_lock
from incisive.common.logging import get_logger
from incisive.node import erasure
from incisive.node.backup import config as backup_config
from incisive.node.backup.manifest import Repository
from incisive.node.home import Node

log = get_logger("compliance")
KILL_ENV = "INCISIVE_TEST_SUBJECT_KILL_AT"
STEPS = ("recorded", "objects-half", "objects", "rows", "audited")
ID_RE = re.compile(r"se-\d{4}-\d{2}-\d{2}-[0-9a-f]{6}")
PSEUDONYM_RE = re.compile(r"P[A-Z2-7]{16}")
MAX_REASON = 500
_LOOKS_LIKE = re.compile(r"\bP[A-Z2-7]{16}\b|(?<![\d.])(?:\d+(?:\.\d+){4,}|2\.25\.\d{6,})(?!\d)")


class NotHeld(InputError):
    """Nothing of the subject is held here; nothing was changed."""

    exit_code = ExitCode.INVALID


class RemoteRefused(IncisiveError):
    """The Central Node refused or could not answer a data-subject request."""

    exit_code = ExitCode.INVALID


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_ENV) == name:  # test-only hook, see the module docstring
        os.kill(os.getpid(), signal.SIGKILL)


def erasure_dir(node: Node) -> Path:
    return node.home / "compliance" / "erasures"


def _list_path(node: Node) -> Path:
    return node.home / erasure.LIST


@contextlib.contextmanager
def _locked(node: Node) -> Iterator[None]:
    directory = erasure_dir(node)
    directory.parent.mkdir(mode=0o700, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    with exclusive_lock(directory / ".lock"):
        yield


def _write(node: Node, record: dict[str, Any], exclusive: bool = False) -> None:
    atomic_write_text(erasure_dir(node) / f"{record['id']}.json", json.dumps(record, indent=2, sort_keys=True)
                      + "\n", mode=0o600, exclusive=exclusive)


def _records(node: Node) -> list[dict[str, Any]]:
    out = []
    for path in sorted(erasure_dir(node).glob("se-*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            log.error("unreadable erasure record %s", path.name)
    return out


def pseudonym_of(node: Node, patient_id: str) -> str:
    """The pseudonym the de-identifier and the clinical import give ``patient_id`` on this node."""
    if not patient_id.strip():
        raise InputError("--patient-id must not be empty")
    if node.settings.tenant_of:  # its own key is not the one its provider pseudonymised with
        raise ConfigError("this is a Central Node tenant: its provider's pseudonym key is not here; the provider "
                          "runs this with --uploader DIR --central URL --token T (only the pseudonym is sent)")
    return node.pseudonymiser.patient(patient_id)


def check_pseudonym(pseudonym: str) -> str:
    if not PSEUDONYM_RE.fullmatch(pseudonym):
        raise InputError("not a patient pseudonym (P + 16 base32 characters)")
    return pseudonym


def _check_reason(reason: str, *secrets_: str) -> str:
    reason = reason.strip()
    if not reason:
        raise InputError("--reason is required (e.g. 'Art. 17 request of 2026-11-03, ticket 4711')")
    if len(reason) > MAX_REASON:
        raise InputError(f"--reason is longer than {MAX_REASON} characters")
    if _LOOKS_LIKE.search(reason) or any(s and s.strip().lower() in reason.lower() for s in secrets_):
        raise InputError("--reason must not name the patient (identifier, pseudonym or UID): it is kept in the "
                         "record; refer to your request ticket instead")
    return reason


def _earlier(node: Node, pseudonym: str) -> list[str]:
    """Ids of the erasure-list entries that name ``pseudonym``."""
    return sorted(erasure.matches(erasure.load_list(_list_path(node)), [pseudonym]))


def lookup(node: Node, patient_id: str) -> dict[str, Any]:
    """At the provider: the pseudonym and what is held (counts)."""
    pseudonym = pseudonym_of(node, patient_id)
    return {"pseudonym": pseudonym, **lookup_pseudonym(node, pseudonym)}


def lookup_pseudonym(node: Node, pseudonym: str) -> dict[str, Any]:
    """What is held of ``pseudonym`` (counts) and the ids of its earlier erasures; never a UID."""
    holding = erasure.held(node, check_pseudonym(pseudonym))
    return {"held": not holding.empty, "counts": holding.as_dict(), "erasures": _earlier(node, pseudonym)}


def erase(node: Node, patient_id: str, reason: str, actor: str = "local") -> dict[str, Any]:
    """Erase the patient ``patient_id`` (journaled, see the module); :class:`NotHeld` when nothing is held."""
    return erase_pseudonym(node, pseudonym_of(node, patient_id), _check_reason(reason, patient_id), actor)


def erase_pseudonym(node: Node, pseudonym: str, reason: str, actor: str = "local") -> dict[str, Any]:
    """Erase the subject ``pseudonym`` (the Central Node tenant's entry point: the provider sends the pseudonym)."""
    check_pseudonym(pseudonym)
    reason = _check_reason(reason, pseudonym)
    with _locked(node):
        records = {r["id"]: r for r in _records(node)}
        unfinished = [r for r in records.values() if r.get("state") == "erasing"
                      and erasure.matches({r["id"]: r["journal"]}, [pseudonym])]
        if unfinished:  # the same erase again: finish the one that was interrupted
            return _finish(node, unfinished[0], pseudonym)
        holding = erasure.held(node, pseudonym)
        if holding.empty:
            earlier = _earlier(node, pseudonym)
            raise NotHeld("not held: nothing of this patient is on this node; nothing changed"
                          + (f" (erased before: {', '.join(earlier)})" if earlier else ""))
        started = datetime.now(UTC)
        entry = erasure.new_entry(pseudonym)
        record_id = f"se-{started:%Y-%m-%d}-{secrets.token_hex(3)}"
        record: dict[str, Any] = {
            "version": 1, "id": record_id, "state": "erasing", "subject": entry["subject"],
            "where": "tenant" if node.settings.tenant_of else "node", "node": node.settings.node_id,
            "reason": reason, "requested_by": actor, "started_at": now_iso(), "completed_at": None,
            "erased": holding.as_dict(), "journal": entry}
        _write(node, record, exclusive=True)
        erasure.add_to_list(_list_path(node), {record_id: entry})
        _audit(node, actor, "subject.erase.start", record)
        _kill_point("recorded")
        return _finish(node, record, pseudonym)


def _audit(node: Node, actor: str, action: str, record: dict[str, Any]) -> None:
    NodeAudit(node.home).append(actor, action, target=record["id"], node=node.settings.node_id,
                                details={"subject": record["subject"], **record["erased"]})


def _finish(node: Node, record: dict[str, Any], pseudonym: str | None) -> dict[str, Any]:
    entry = record["journal"]
    erasure.add_to_list(_list_path(node), {record["id"]: entry})  # killed before step 2: put it there now
    if pseudonym is None:  # a resume: find the subject by its digest (nothing left when the rows went already)
        pseudonym = erasure.matches({record["id"]: entry}, erasure.pseudonyms(node)).get(record["id"])
    if pseudonym is not None:
        erasure.remove(node, pseudonym, _kill_point)
    record["backups"] = _backups(node, {record["id"]: entry})
    _audit(node, str(record.get("requested_by", "local")), "subject.erase", record)
    _kill_point("audited")
    record.update(state="done", completed_at=now_iso())
    record.pop("journal", None)
    _write(node, record)
    log.info("subject erased: record=%s", record["id"])
    return record


def _backups(node: Node, entries: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Put the erasure list into every mounted directory repository; what each target does with the erasure."""
    cfg = backup_config.load(node.home)
    targets = []
    for target in cfg.targets:
        status = "next-run"  # restic, or a drive not mounted: the next snapshot's configuration carries the list
        if target.kind == "dir":
            repo = Repository.for_node(Path(target.location), node.settings.node_id)
            if (repo.root / "FORMAT").is_file():
                try:
                    erasure.add_to_list(repo.root / erasure.REPOSITORY_LIST, entries)
                    status = "listed"
                except OSError as exc:
                    log.warning("erasure list not written to backup target %s: %s", target.name,
                                type(exc).__name__)
        targets.append({"name": target.name, "kind": target.kind, "list": status})
    return {"targets": targets, "retention": {"keep_last": cfg.policy.keep_last,
                                              "keep_monthly": cfg.policy.keep_monthly},
            "note": "snapshots taken before the erase hold the subject until retention removes them; a restore "
                    "re-applies the erasure"}


def resume(node: Node) -> list[dict[str, Any]]:
    """Finish every interrupted erase (records in state ``erasing``)."""
    with _locked(node):
        return [_finish(node, r, None) for r in _records(node) if r.get("state") == "erasing"]


def erasures(node: Node) -> list[dict[str, Any]]:
    """The erasure records (done and unfinished), and list entries without a record here (re-applied at a
    restore, or recorded on the node this one was restored from); no digest salt, no identifier."""
    records = [{k: v for k, v in r.items() if k != "journal"} for r in _records(node)]
    known = {r["id"] for r in records}
    for entry_id, entry in sorted(erasure.load_list(_list_path(node)).items()):
        if entry_id not in known:
            records.append({"id": entry_id, "state": "listed", "subject": entry["subject"],
                            "started_at": entry.get("recorded_at"), "completed_at": None})
    return sorted(records, key=lambda r: str(r.get("started_at") or ""))


def pending_findings(node: Node) -> list[dict[str, str]]:
    """For ``compliance check``: an unfinished erase is a failing finding until it is resumed."""
    return [{"code": "subject.erase_unfinished", "severity": "fail", "subject": r["id"],
             "message": "a data-subject erase was interrupted and is not finished",
             "fix": "incisive compliance subject erase --resume"}
            for r in _records(node) if r.get("state") == "erasing"]


# --- the provider's side of a Central Node tenant ---------------------------------------------------------
def _remote(url: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url = url.strip().rstrip("/")
    host = httpx.URL(url).host if url.startswith(("http://", "https://")) else ""
    if not host:
        raise ConfigError("--central must be the Central Node's URL, e.g. https://central.example")
    if url.startswith("http://") and not tls.is_loopback_host(host):
        raise ConfigError("the Central Node URL must be https:// (plain http:// only to this machine)")
    if not token:
        raise ConfigError("give --token (the tenant's manager token) or set INCISIVE_TENANT_TOKEN")
    try:
        response = httpx.request(method, url + path, json=body, timeout=300, verify=verify_setting(),
                                 headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise RemoteRefused(f"cannot reach the Central Node: {tls.transport_reason(exc)}") from None
    try:
        data = response.json()
    except ValueError:
        data = {"detail": response.text[:200]}
    if response.status_code == 404:
        raise NotHeld(f"not held at the Central Node: {data.get('detail', '')}".rstrip(": "))
    if response.status_code >= 300:
        raise RemoteRefused(f"the Central Node answered {response.status_code}: {data.get('detail', '')}")
    return data


def _provider_pseudonym(uploader_home: Path, patient_id: str) -> str:
    from incisive.node.upload.home import Uploader

    if not patient_id.strip():
        raise InputError("--patient-id must not be empty")
    return Uploader.open(uploader_home).pseudonymiser.patient(patient_id)


def remote_lookup(uploader_home: Path, patient_id: str, url: str, token: str) -> dict[str, Any]:
    """Lookup at the provider's tenant: the pseudonym computed here with the uploader's key, only it sent."""
    pseudonym = _provider_pseudonym(uploader_home, patient_id)
    return {"pseudonym": pseudonym, **_remote(url, token, "GET", f"/tenant/v1/subjects/{pseudonym}")}


def remote_erase(uploader_home: Path, patient_id: str, reason: str, url: str, token: str) -> dict[str, Any]:
    """Erase at the provider's tenant (only the pseudonym and the reason are sent)."""
    pseudonym = _provider_pseudonym(uploader_home, patient_id)
    reason = _check_reason(reason, patient_id, pseudonym)
    return dict(_remote(url, token, "POST", f"/tenant/v1/subjects/{pseudonym}/erase", {"reason": reason}))

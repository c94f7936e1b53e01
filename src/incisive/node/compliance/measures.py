"""Technical and organisational measures (GDPR Art. 32, Art. 30(1)(g)), each with live evidence from the node.

Every measure is read from the component that implements it, at the moment the record is generated:

* pseudonymisation: the door (de-identify or verify), the PS3.15 profile and options, the action table's
  summary, the retain list, safe private tags, ``sr_keep_text``, quarantine modalities, the keyed pseudonyms;
* encryption at rest: the sealed store of a Central Node tenant (``settings.keyring``), else what protects it;
* backups: the last verified snapshot per target (:func:`incisive.node.backup.health.backup_health`);
* redundancy: RAID / ZFS health (:func:`incisive.node.backup.raid.raid_health`);
* the audit chain: verified now (:meth:`incisive.common.audit_log.NodeAudit.verify`);
* the readiness check: the last result recorded by :func:`run_readiness` (``incisive compliance pack`` runs it);
* access control: API tokens by role (never the tokens), allowed AE titles, TLS;
* the platform link: enrolment, the signed (Ed25519) requests, the pinned CA;
* disclosure control: the node policy's k, rounding, overlap control, withheld fields, the bundle sandbox.

A measure's ``status`` is ``ok``, ``warn``, ``fail`` or ``info``; the record shows it, it is no compliance finding.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from incisive.common.audit_log import NodeAudit
from incisive.common.errors import ConfigError, IncisiveError
from incisive.common.fsio import atomic_write_text
from incisive.node.api.tokens import list_tokens
from incisive.node.backup.health import backup_health, last_verified_backup_age
from incisive.node.backup.raid import raid_health
from incisive.node.compliance.store import compliance_dir
from incisive.node.deid import retain, table
from incisive.node.home import Node
from incisive.node.policy import load_policy

__all__ = ["ACTION_MEANINGS", "deid_profile", "last_readiness", "measures", "run_readiness"]

READINESS_FILE = "readiness.json"
ACTION_MEANINGS = {"X": "removed", "Z": "emptied", "D": "dummy value", "U": "UID remapped (keyed)",
                   "C": "cleaned (descriptor cleaner)", "K": "kept", "S": "date shifted (keyed, per patient)"}


def _measure(mid: str, title: str, status: str, evidence: str, **details: Any) -> dict[str, Any]:
    return {"id": mid, "title": title, "status": status, "evidence": evidence, "details": details}


def deid_profile(node: Node) -> dict[str, Any]:
    """What de-identification this node applies (the same engine at a provider's ``incisive upload``)."""
    s = node.settings
    actions = Counter(table.ACTIONS.values())
    masked = Counter(code for *_, code in table.MASKED_ACTIONS)
    return {
        "door": s.door,
        "standard": f"DICOM PS3.15 Annex E, Table E.1-1 ({table.STANDARD_EDITION})",
        "methods": [{"code": c, "meaning": m} for c, m in table.METHOD_CODES],
        "actions": {ACTION_MEANINGS.get(code, code): n for code, n in sorted(actions.items())},
        "masked_actions": {ACTION_MEANINGS.get(code, code): n for code, n in sorted(masked.items())},
        "retained_attributes": len(retain.RETAIN),
        "safe_private_tags": list(s.safe_private_tags),
        "sr_keep_text": s.sr_keep_text,
        "quarantine_modalities": list(s.quarantine_modalities),
        "pseudonyms": "keyed HMAC-SHA256 of the original identifiers; the key stays in <node>/secrets (0600)",
        "pseudonym_key_present": node.key_path.is_file(),
    }


def _pseudonymisation(node: Node) -> dict[str, Any]:
    p = deid_profile(node)
    door = ("de-identified at the provider (incisive upload) and verified on arrival" if p["door"] == "verify"
            else "de-identified at the node's door before any byte is stored")
    status = "ok" if p["door"] == "verify" or p["pseudonym_key_present"] else "fail"
    text = (f"{door}; {p['standard']}, options {', '.join(m['code'] for m in p['methods'][1:])}; "
            f"{sum(p['actions'].values())} attributes in the action table, {p['retained_attributes']} reviewed "
            f"retained attributes, {len(p['safe_private_tags'])} safe private tags; SR text "
            f"{'kept (cleaned)' if p['sr_keep_text'] else 'removed'}; quarantined modalities: "
            f"{', '.join(p['quarantine_modalities']) or 'none'}")
    return _measure("pseudonymisation", "Pseudonymisation (Art. 32(1)(a), Art. 89(1))", status, text, **p)


def _encryption(node: Node) -> dict[str, Any]:
    s = node.settings
    title = "Encryption at rest (Art. 32(1)(a))"
    if s.keyring:
        spec = s.master_key.partition(":")[0] or "unset"
        return _measure("encryption", title, "ok",
                        f"objects sealed with AES-256-GCM under the tenant's own data key; the key ring is kept "
                        f"outside the node directory and every backup, wrapped by the master key ({spec})",
                        keyring=True, master_key=spec)
    mode = node.home.stat().st_mode & 0o777
    return _measure("encryption", title, "warn",
                    f"the store is not encrypted by incisive: it is protected by the node directory's mode "
                    f"{mode:04o} (service account only) and must be on an encrypted disk (not verified here); "
                    "off-site backups are restic-encrypted", keyring=False, directory_mode=f"{mode:04o}")


def _backup(node: Node) -> dict[str, Any]:
    health = backup_health(node.home)
    title = "Backups and restore tested (Art. 32(1)(b)(c))"
    if not health["targets"]:
        return _measure("backup", title, "fail", "no backup target configured", **health)
    age = health["verified_age_days"]
    status = "warn" if health["stale"] or health["alerts"] else "ok"
    text = ("no verified backup yet" if age is None else f"newest verified snapshot {age} days old (policy: every "
            f"{health['policy']['every_days']} days)") + f"; {len(health['targets'])} target(s)"
    return _measure("backup", title, status, text, **health)


def _raid() -> dict[str, Any]:
    health = raid_health()
    title = "Storage redundancy (Art. 32(1)(b))"
    if health["alerts"]:
        return _measure("raid", title, "fail", "; ".join(health["alerts"]), **health)
    if not health["redundant"]:
        return _measure("raid", title, "warn", "no RAID array or ZFS pool detected on this machine", **health)
    return _measure("raid", title, "ok", f"{len(health['md'])} RAID array(s), {len(health['zfs'])} ZFS pool(s) "
                    "healthy", **health)


def _audit(node: Node) -> dict[str, Any]:
    result = NodeAudit(node.home).verify()
    text = f"{result.entries} entries, hash chain intact" if result.ok else \
        f"hash chain broken: {'; '.join(result.problems[:3])}"
    return _measure("audit", "Audit chain of every job and change (Art. 5(2), Art. 32(1)(d))",
                    "ok" if result.ok else "fail", text, **result.as_dict())


def run_readiness(node: Node) -> dict[str, Any]:
    """Run the readiness check (node specification) on this machine and record its report."""
    from incisive.node.check.profiles import DEFAULT_PROFILE, CheckContext, get_profile
    from incisive.node.check.runner import run_check
    from incisive.node.check.system import LiveSystem

    ctx = CheckContext(store_path=str(node.home), backup_age=lambda: last_verified_backup_age(node.home))
    report = run_check(LiveSystem(), get_profile(DEFAULT_PROFILE), ctx).to_dict()
    folder = compliance_dir(node.home)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write_text(folder / READINESS_FILE, json.dumps(report, indent=2) + "\n", mode=0o600)
    return report


def last_readiness(node: Node) -> dict[str, Any] | None:
    """The last recorded readiness report, if any."""
    try:
        data: dict[str, Any] = json.loads((compliance_dir(node.home) / READINESS_FILE).read_text())
        return data
    except (OSError, ValueError):
        return None


def _readiness(node: Node) -> dict[str, Any]:
    title = "Machine meets the node specification (readiness check)"
    report = last_readiness(node)
    if report is None:
        return _measure("readiness", title, "warn", "not recorded yet (incisive compliance pack runs it)")
    summary = report.get("summary", {})
    status = {0: "ok", 1: "warn"}.get(summary.get("exit_code"), "fail")
    counts = ", ".join(f"{summary.get(k, 0)} {k}" for k in ("pass", "warn", "fail", "unknown"))
    failing = [r["id"] for r in report.get("rows", []) if r.get("verdict") == "fail"]
    return _measure("readiness", title, status, f"{report.get('profile')} at {report.get('generated_at')}: {counts}",
                    summary=summary, failing=failing)


def _access(node: Node) -> dict[str, Any]:
    tokens = list_tokens(node)
    active = Counter(t["role"] for t in tokens if t["revoked_at"] is None)
    s = node.settings
    roles = ", ".join(f"{n} {role}" for role, n in sorted(active.items())) or "no API tokens"
    tls = bool(s.tls_cert) or bool(s.dicom_tls_cert)
    text = (f"least-privilege API tokens by role ({roles}; {len(tokens) - sum(active.values())} revoked; only "
            f"hashes stored); DICOM peers allowed: {len(s.allowed_aes)}; TLS: "
            f"{'DICOMweb' if s.tls_cert else ''}{' + ' if s.tls_cert and s.dicom_tls_cert else ''}"
            f"{'DICOM' if s.dicom_tls_cert else ''}{'' if tls else 'not configured'}")
    return _measure("access", "Access control (Art. 32(1)(b), Art. 25)", "ok" if tls or not tokens else "warn",
                    text, tokens_by_role=dict(active), revoked=len(tokens) - sum(active.values()),
                    allowed_aes=len(s.allowed_aes), tls_http=bool(s.tls_cert), tls_dicom=bool(s.dicom_tls_cert))


def _link(node: Node) -> dict[str, Any]:
    from incisive.node.agent_link import AgentSettings, agent_key_path

    title = "Signed link to the platform (nodes dial out; Art. 32(1)(b))"
    try:
        agent = AgentSettings.load(node.home)
    except ConfigError:
        return _measure("link", title, "info", "not enrolled with a platform: nothing leaves this node",
                        enrolled=False)
    host = urlsplit(agent.platform_url).hostname or "?"
    pinned = bool(agent.ca_file)
    text = (f"enrolled with {host}: outbound HTTPS only, every request Ed25519-signed (key in secrets/, "
            f"{'present' if agent_key_path(node).is_file() else 'MISSING'}), platform CA "
            f"{'pinned' if pinned else 'from the system store'}")
    status = "ok" if agent_key_path(node).is_file() and agent.verify_tls else "warn"
    return _measure("link", title, status, text, enrolled=True, platform=host, ca_pinned=pinned,
                    verify_tls=agent.verify_tls)


def _disclosure(node: Node) -> dict[str, Any]:
    p = load_policy(node.home)
    text = (f"aggregates only, cells below k={p.min_cell_count} suppressed at the node, filters need "
            f"{p.min_subset} units, overlap control {'on' if p.overlap_control else 'off'}, rounding "
            f"{p.rounding or 'none'}, {len(p.withheld_fields)} withheld fields; bundle code sandboxed "
            f"({p.sandbox.mode})")
    status = "ok" if p.sandbox.mode != "off" else "warn"
    return _measure("disclosure", "Data minimisation and disclosure control (Art. 5(1)(c), Art. 25)", status, text,
                    min_cell_count=p.min_cell_count, min_subset=p.min_subset, overlap_control=p.overlap_control,
                    rounding=p.rounding, require_dp=p.require_dp, withheld_fields=len(p.withheld_fields),
                    sandbox=p.sandbox.mode)


def measures(node: Node) -> list[dict[str, Any]]:
    """Every measure with its evidence; a measure whose evidence cannot be read says so (status fail)."""
    producers: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("pseudonymisation", lambda: _pseudonymisation(node)), ("encryption", lambda: _encryption(node)),
        ("backup", lambda: _backup(node)), ("raid", _raid), ("audit", lambda: _audit(node)),
        ("readiness", lambda: _readiness(node)), ("access", lambda: _access(node)), ("link", lambda: _link(node)),
        ("disclosure", lambda: _disclosure(node)),
    ]
    out = []
    for mid, produce in producers:
        try:
            out.append(produce())
        except (IncisiveError, OSError) as exc:
            out.append(_measure(mid, mid, "fail", f"evidence could not be read: {type(exc).__name__}"))
    return out

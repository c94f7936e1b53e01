"""The record of processing activities (GDPR Art. 30(1)), generated from what the node knows.

Each part of Art. 30(1) comes from the component that holds it; nothing is typed except the facts the system
cannot know (:data:`incisive.node.compliance.store.FIELDS`), which the record marks missing until recorded:

(a) controller, contact person, DPO: ``compliance contact set`` / ``compliance set controller-*``;
(b) purposes: the node policy (job types, projects, researchers), the projects of the jobs in the audit chain,
    and ``purposes-extra``;
(c) categories of data subjects and of personal data: the catalogue (modalities, body parts, clinical fields
    present, label names, counts by category; never a value about a person);
(d) recipients: the actors of the audit chain's ``job.*`` entries answered ``ok`` (who received aggregates or
    models), the platform that relays them, the registered processors, ``recipients-extra``;
(e) transfers to third countries: :mod:`incisive.node.compliance.residency`;
(f) time limits for erasure: ``retention-years`` and the backup retention policy;
(g) technical and organisational measures: :mod:`incisive.node.compliance.measures`, each with live evidence.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from incisive import __version__
from incisive.common.audit_log import NodeAudit
from incisive.node.backup import config as backup_config
from incisive.node.catalogue import queries
from incisive.node.catalogue.models import ClinicalRecord, InferenceResult, Patient, Series
from incisive.node.compliance import store
from incisive.node.compliance.measures import measures
from incisive.node.compliance.processors import list_processors
from incisive.node.compliance.residency import residency
from incisive.node.home import Node
from incisive.node.policy import load_policy

__all__ = ["FORMAT", "build_ropa", "catalogue_categories", "recipients"]

FORMAT = "incisive.ropa/1"
JOB_PURPOSES = {
    "count": "federated aggregate statistics (k-anonymous counts) for research projects",
    "summary": "federated aggregate statistics (sums, means) for research projects",
    "fl-supernode": "federated training of AI models (model updates leave the node, never data)",
    "infer": "inference with approved models at the node (results stay at the node)",
}


def catalogue_categories(node: Node) -> dict[str, Any]:
    """Categories of data subjects and personal data, and counts by category, from the catalogue."""
    fields: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    with node.catalogue.session() as s:
        stats = queries.stats(s)
        for row_fields, row_labels in s.execute(select(ClinicalRecord.fields, ClinicalRecord.labels)
                                                .execution_options(yield_per=1000)):
            fields.update(str(k) for k in (row_fields or {}))
            labels.update(str(k) for k in (row_labels or {}))
        for column in (ClinicalRecord.diagnosis, ClinicalRecord.cancer_type, ClinicalRecord.age_band,
                       ClinicalRecord.sex):
            present = s.scalar(select(func.count()).where(column.is_not(None))) or 0
            if present:
                fields[column.key] += present
        body_parts = {str(b or "?"): int(n) for b, n in s.execute(
            select(Series.body_part, func.count(Series.id)).group_by(Series.body_part).order_by(Series.body_part))}
        demographics = {"sex": s.scalar(select(func.count()).where(Patient.sex.is_not(None))) or 0,
                        "age_band": s.scalar(select(func.count()).where(Patient.age_band.is_not(None))) or 0}
        inference = s.scalar(select(func.count(InferenceResult.id))) or 0
    subjects = max(stats["patients"], stats["clinical_records"])
    return {
        "data_subjects": {"patients": stats["patients"], "clinical_records": stats["clinical_records"],
                          "total_pseudonymised_subjects": subjects},
        "imaging": {"modalities": stats["by_modality"], "body_parts": body_parts, "studies": stats["studies"],
                    "series": stats["series"], "instances": stats["instances"], "bytes": stats["bytes"],
                    "quarantined": stats["quarantined"]},
        "clinical_fields": dict(sorted(fields.items())),
        "labels": dict(sorted(labels.items())),
        "demographics": demographics,
        "derived": {"inference_results": inference},
    }


def _personal_data(cat: dict[str, Any]) -> list[dict[str, Any]]:
    img = cat["imaging"]
    rows = []
    if img["instances"] or img["quarantined"]:
        mods = ", ".join(f"{m['modality']} ({m['studies']} studies, {m['instances']} instances)"
                         for m in img["modalities"])
        rows.append({"category": "medical images (DICOM, de-identified per PS3.15)", "detail": mods,
                     "count": img["instances"]})
    if cat["clinical_fields"]:
        rows.append({"category": "clinical data (pseudonymised)", "detail": ", ".join(cat["clinical_fields"]),
                     "count": cat["data_subjects"]["clinical_records"]})
    if cat["labels"]:
        rows.append({"category": "labels and outcomes", "detail": ", ".join(cat["labels"]),
                     "count": max(cat["labels"].values())})
    if any(cat["demographics"].values()):
        rows.append({"category": "demographics (sex, age band; no names, no identifiers)",
                     "detail": "from DICOM Patient Characteristics", "count": cat["data_subjects"]["patients"]})
    if cat["derived"]["inference_results"]:
        rows.append({"category": "derived data: model scores from inference at the node", "detail": "",
                     "count": cat["derived"]["inference_results"]})
    if img["quarantined"]:
        rows.append({"category": "images held in quarantine (possible burned-in text; not used)", "detail": "",
                     "count": img["quarantined"]})
    return rows


def recipients(node: Node) -> dict[str, Any]:
    """Who received results from this node (``job.*`` entries answered ``ok``), and the projects asked for."""
    by_actor: dict[str, dict[str, Any]] = {}
    projects: set[str] = set()
    for entry in NodeAudit(node.home).entries():
        action = str(entry.get("action", ""))
        if not action.startswith("job.") or entry.get("outcome") != "ok":
            continue
        actor = str(entry.get("actor") or "?")
        row = by_actor.setdefault(actor, {"recipient": actor, "jobs": 0, "job_types": set(), "last": ""})
        row["jobs"] += 1
        row["job_types"].add(action.removeprefix("job."))
        row["last"] = max(row["last"], str(entry.get("ts", "")))
        query = (entry.get("details") or {}).get("query") or {}
        if isinstance(query, dict) and query.get("project"):
            projects.add(str(query["project"]))
    rows = [{**r, "job_types": sorted(r["job_types"])} for r in sorted(by_actor.values(), key=lambda r: r["recipient"])]
    return {"researchers": rows, "projects": sorted(projects)}


def _purposes(node: Node, data: dict[str, Any], seen_projects: list[str]) -> dict[str, Any]:
    policy = load_policy(node.home)
    return {
        "participate": policy.participate,
        "activities": [JOB_PURPOSES[t] for t in policy.job_types if t in JOB_PURPOSES] if policy.participate
        else ["none: the node takes part in no federated job"],
        "job_types": list(policy.job_types),
        "projects_allowed": list(policy.projects) or "any project the platform approves",
        "researchers_allowed": len(policy.researchers) or "any researcher the platform approves",
        "projects_seen": seen_projects,
        "extra": data["fields"].get("purposes_extra"),
    }


def build_ropa(node: Node) -> dict[str, Any]:
    """The Art. 30 record as a JSON-ready dict (rendered by :mod:`incisive.node.compliance.render`)."""
    data = store.load(node.home)
    tenant = bool(node.settings.tenant_of)
    controller = data.get("controller") or {}
    cat = catalogue_categories(node)
    got = recipients(node)
    processors = list_processors(node.home)
    backup = backup_config.load(node.home)
    platform = "the project's platform (relays aggregates and model updates to the researchers)"
    enrolled = (node.home / "agent" / "agent.toml").is_file()
    record_recipients: list[dict[str, Any]] = []
    if enrolled or got["researchers"]:
        record_recipients.append({
            "recipient": "platform", "jobs": sum(r["jobs"] for r in got["researchers"]),
            "job_types": sorted({t for r in got["researchers"] for t in r["job_types"]}),
            "last": max((r["last"] for r in got["researchers"]), default=""), "role": platform})
    record_recipients += [{**r, "role": "researcher (aggregates or trained models)"} for r in got["researchers"]]
    record_recipients += [{"recipient": p["name"], "jobs": None, "job_types": [], "last": "",
                           "role": f"processor: {p['service']} ({p['country']})"} for p in processors]
    if data["fields"].get("recipients_extra"):
        record_recipients.append({"recipient": data["fields"]["recipients_extra"], "jobs": None, "job_types": [],
                                  "last": "", "role": "recorded by the controller"})
    subjects = [f"patients of {node.settings.provider} whose pseudonymised images or clinical data are held "
                f"({cat['data_subjects']['total_pseudonymised_subjects']})"]
    if data["fields"].get("data_subjects_extra"):
        subjects.append(data["fields"]["data_subjects_extra"])
    return {
        "format": FORMAT,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "node": {"id": node.settings.node_id, "provider": node.settings.provider, "door": node.settings.door,
                 "central_node_tenant": tenant},
        "controller": {"name": controller.get("name"), "address": controller.get("address")},
        "contact": data.get("contact"),
        "dpo": data.get("dpo"),
        "legal_basis": data["fields"].get("legal_basis"),
        "dpia": data["fields"].get("dpia"),
        "supervisory_authority": data["fields"].get("supervisory_authority"),
        "purposes": _purposes(node, data, got["projects"]),
        "data_subjects": {"categories": subjects, **cat["data_subjects"]},
        "personal_data": {"categories": _personal_data(cat),
                          "special_categories": "data concerning health (Art. 9(1) GDPR), pseudonymised",
                          **{k: cat[k] for k in ("imaging", "clinical_fields", "labels", "demographics", "derived")}},
        "recipients": record_recipients,
        "processors": processors,
        "transfers": residency(node),
        "retention": {"years": data["fields"].get("retention_years"),
                      "backup": {"every_days": backup.policy.every_days, "keep_last": backup.policy.keep_last,
                                 "keep_monthly": backup.policy.keep_monthly, "targets": len(backup.targets)},
                      "erasure": "incisive compliance subject erase removes a patient from store and catalogue; "
                                 "backups age out under the retention policy above"},
        "measures": measures(node),
        "missing": store.missing_fields(data, tenant),
    }

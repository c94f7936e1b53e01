"""Every compliance finding of a node (``incisive compliance check``): what is missing or not allowed as recorded.

* ``contact.missing``, ``dpo.missing``, ``field.missing`` (one per required field, subject = its key): facts
  only a person can give (Art. 30(1)(a), (b), (f); Art. 37; the node specification's contact person);
* ``processor.*`` (:func:`incisive.node.compliance.processors.problems`): no DPA filed, a filed document missing
  or changed, an incomplete Art. 28(3) checklist, a processor outside the EU/EEA without SCC or without a TIA;
  on a Central Node tenant, ``processor.central_operator_missing`` while no processor (the operator) is registered;
* ``residency.node_outside_eu``, ``residency.backup_outside_eu``, ``residency.backup_location_missing``:
  a location outside the EU/EEA without safeguards, or not recorded (Chapter V);
* ``audit.chain_broken``: the node's audit chain does not verify (Art. 5(2) accountability);
* the breach workflow's open findings (``breach.open_findings(node)``, Art. 33/34) and the data-subject
  module's (``subjects.pending_findings(node)``: an unfinished erase), each when that module is installed.

Every finding ``fail``s unless it says ``warn``; the command exits 1 while any ``fail`` remains. Findings name
subjects (a processor, a target, a field) and never hold PHI.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from incisive.common.audit_log import NodeAudit
from incisive.node.compliance import processors, store
from incisive.node.compliance.residency import central_operator, locations
from incisive.node.home import Node

__all__ = ["HOOK_MODULES", "Finding", "failing", "findings"]

# modules of the other compliance workflows, each asked for its open findings when installed (imported by name,
# so that they may import this module for Finding), and the names their hook may have
HOOK_MODULES = ("incisive.node.compliance.breach", "incisive.node.compliance.subjects")
HOOK_NAMES = ("open_findings", "pending_findings")


@dataclass(frozen=True)
class Finding:
    """One thing to fix: ``code`` (stable, dotted), ``severity`` fail|warn, ``subject``, ``message``, ``fix``."""

    code: str
    severity: str
    subject: str
    message: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def of(cls, item: Finding | Mapping[str, Any]) -> Finding:
        """A hook's finding, as a :class:`Finding` or a mapping with the same keys."""
        if isinstance(item, Finding):
            return item
        severity = str(item.get("severity", "fail"))
        return cls(str(item["code"]), severity if severity in ("fail", "warn") else "fail",
                   str(item.get("subject", "")), str(item.get("message", "")), str(item.get("fix", "")))


def _missing(data: dict[str, Any], tenant: bool) -> list[Finding]:
    out = []
    for name in store.missing_fields(data, tenant):
        if name == "contact":
            out.append(Finding("contact.missing", "fail", "contact", "no designated contact person recorded",
                               'incisive compliance contact set --name … --email … --role "technical contact"'))
        elif name == "dpo":
            out.append(Finding("dpo.missing", "fail", "dpo", "no data protection officer recorded (Art. 37)",
                               "incisive compliance contact set … --dpo-name … --dpo-email …"))
        else:
            spec = store.FIELDS[name]
            out.append(Finding("field.missing", "fail", name, f"not recorded: {spec.title}",
                               f"incisive compliance set {name} VALUE"))
    return out


def _residency(node: Node, data: dict[str, Any]) -> list[Finding]:
    out = []
    for loc in locations(node, data):
        if loc.kind == "processor" or loc.status in ("eu_eea", "safeguarded"):
            continue  # processors are judged with their contract (processors.problems)
        if loc.kind == "node":
            if loc.status == "transfer":
                out.append(Finding("residency.node_outside_eu", "fail", loc.subject,
                                   f"the node is in {loc.country}, outside the EU/EEA; it needs {loc.safeguard}",
                                   "host the node in the EU/EEA (compliance set node-country), or on a Central "
                                   "Node record transfer_scc and transfer_tia in central.toml"))
            continue  # an unknown node country is field.missing
        if loc.status == "unknown":
            out.append(Finding("residency.backup_location_missing", "fail", loc.subject,
                               f"backup target {loc.subject!r}: where its copies are kept is not recorded",
                               f"incisive compliance set backup-location {loc.subject} COUNTRY"))
        else:
            out.append(Finding("residency.backup_outside_eu", "fail", loc.subject,
                               f"backup target {loc.subject!r} is in {loc.country}, outside the EU/EEA, without "
                               "safeguards", f"keep it in the EU/EEA (incisive compliance set backup-location "
                               f"{loc.subject} COUNTRY), or --processor ID of a processor with SCC and a TIA"))
    return out


def _hooks(node: Node) -> list[Finding]:
    out: list[Finding] = []
    for name in HOOK_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                continue
        except ModuleNotFoundError:
            continue
        module = importlib.import_module(name)
        hook = next((getattr(module, attr) for attr in HOOK_NAMES if hasattr(module, attr)), None)
        if hook is not None:
            out.extend(Finding.of(item) for item in hook(node))
    return out


def findings(node: Node) -> list[Finding]:
    """Every finding, in a stable order: records, processors, residency, audit, then the workflows' own."""
    data = store.load(node.home)
    out = _missing(data, bool(node.settings.tenant_of))
    for entry in data["processors"]:
        out += [Finding(code, "fail", entry["name"], message, fix)
                for code, message, fix in processors.problems(node.home, entry)]
    operator = central_operator(node)
    if operator is not None and not data["processors"]:
        out.append(Finding("processor.central_operator_missing", "fail", operator,
                           f"this tenant's data is hosted by {operator} (a processor, Art. 28) but no processor is "
                           "registered", f'incisive compliance processor add "{operator}" --service "Central Node '
                           'hosting" --country CC --dpa-signed DATE --document DPA.pdf --checklist …'))
    out += _residency(node, data)
    verification = NodeAudit(node.home).verify()
    if not verification.ok:
        out.append(Finding("audit.chain_broken", "fail", "audit", "; ".join(verification.problems[:3]),
                           "find what changed the audit log (incisive audit verify --node …); it cannot be "
                           "repaired, only explained"))
    return out + _hooks(node)


def failing(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.severity == "fail"]

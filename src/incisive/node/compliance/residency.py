"""Where this node's data is: the node itself, every backup target and every processor (GDPR Chapter V).

A location inside the EU/EEA is no transfer. Outside it is a transfer to a third country, which needs a
safeguard: standard contractual clauses (Art. 46(2)(c)) with a transfer impact assessment, and the keys kept in
the EU/EEA so that only ciphertext is abroad. A location nobody recorded is unknown, which is a finding too.

* the node: ``compliance set node-country``; on a Central Node tenant, the Central Node's ``central.toml``
  ``country`` (with its ``transfer_scc`` / ``transfer_tia``), so the operator never types it per tenant;
* backup targets (``<node>/backup/targets.json``): ``compliance set backup-location TARGET COUNTRY
  [--processor ID]`` (a tenant falls back to ``central.toml`` ``backup_locations``); a target abroad is
  safeguarded when the processor keeping it is registered with SCC and a TIA;
* processors: their registered country, SCC flag and TIA document (:mod:`.processors`).
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from incisive.common.countries import in_eu_eea
from incisive.node.backup import config as backup_config
from incisive.node.compliance import store
from incisive.node.home import Node

__all__ = ["Location", "central_operator", "locations", "residency"]

SAFEGUARD = "standard contractual clauses (Art. 46(2)(c)) + a transfer impact assessment; keys kept in the EU/EEA"


@dataclass(frozen=True)
class Location:
    """One place data is kept or processed, judged."""

    kind: str  # node | backup | processor
    subject: str  # the node id, the target name, the processor name
    country: str | None
    source: str  # where the country comes from
    status: str  # eu_eea | safeguarded | transfer | unknown
    safeguard: str  # what a transfer needs, or what covers it
    processor: str | None = None

    @property
    def eu_eea(self) -> bool:
        return self.status == "eu_eea"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "eu_eea": self.eu_eea}


def _central(node: Node) -> dict[str, Any] | None:
    """The Central Node's settings when this node is one of its tenants (read as data, never imported)."""
    central = node.settings.tenant_of
    if not central:
        return None
    try:
        data = tomllib.loads((Path(central) / "central.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    tia = str(data.get("transfer_tia", "")).strip()
    tia_ok = bool(tia) and (Path(central) / tia).resolve().is_relative_to(Path(central).resolve()) \
        and (Path(central) / tia).resolve().is_file()
    return {"country": data.get("country"), "scc": bool(data.get("transfer_scc")), "tia": tia_ok,
            "backup_locations": data.get("backup_locations") or {}, "dir": central,
            "provider": str(data.get("provider") or "")}


def central_operator(node: Node) -> str | None:
    """The hosting provider of the Central Node this node is a tenant of (its processor); None on an own node."""
    central = _central(node)
    if central is None:
        return None
    return central.get("provider") or "the Central Node operator"


def _judge(kind: str, subject: str, country: str | None, source: str, scc: bool, tia: bool,
           processor: str | None = None) -> Location:
    if not country:
        return Location(kind, subject, None, source, "unknown", "record where it is", processor)
    if in_eu_eea(country):
        return Location(kind, subject, country, source, "eu_eea", "none needed (EU/EEA)", processor)
    if scc and tia:
        return Location(kind, subject, country, source, "safeguarded",
                        "SCC signed, TIA filed; keep the keys in the EU/EEA", processor)
    return Location(kind, subject, country, source, "transfer", SAFEGUARD, processor)


def locations(node: Node, data: dict[str, Any] | None = None) -> list[Location]:
    """The node, then its backup targets, then its processors."""
    data = data if data is not None else store.load(node.home)
    central = _central(node)
    if central is not None:
        found = [_judge("node", node.settings.node_id, central.get("country"), "central.toml (Central Node)",
                        bool(central.get("scc")), bool(central.get("tia")))]
    else:
        found = [_judge("node", node.settings.node_id, data.get("node_country"), "compliance set node-country",
                        False, False)]
    processors = {p["id"]: p for p in data["processors"]}
    links: dict[str, str] = data.get("backup_processors", {})
    recorded: dict[str, str] = dict((central or {}).get("backup_locations", {}))
    recorded.update(data["backup_locations"])
    targets = [t.name for t in backup_config.load(node.home).targets]
    for name in sorted(set(targets) | set(data["backup_locations"])):
        country = recorded.get(name)
        source = "compliance set backup-location" if name in data["backup_locations"] else \
            "central.toml backup_locations" if name in recorded else "not recorded"
        keeper = processors.get(links.get(name, ""))
        scc = bool(keeper and keeper.get("scc"))
        tia = bool(keeper and any(d["kind"] == "tia" for d in keeper["documents"]))
        found.append(_judge("backup", name, country, source, scc, tia, keeper["name"] if keeper else None))
    for p in data["processors"]:
        tia = any(d["kind"] == "tia" for d in p["documents"])
        found.append(_judge("processor", p["name"], p["country"], "processor register", bool(p.get("scc")), tia,
                            p["id"]))
    return found


def residency(node: Node) -> dict[str, Any]:
    """The residency report: every location, and the transfers among them (JSON-ready)."""
    rows = locations(node)
    return {
        "node": rows[0].as_dict(),
        "backup_targets": [r.as_dict() for r in rows if r.kind == "backup"],
        "processors": [r.as_dict() for r in rows if r.kind == "processor"],
        "transfers": [r.as_dict() for r in rows if r.status in ("transfer", "safeguarded")],
        "unknown": [r.as_dict() for r in rows if r.status == "unknown"],
        "central_node": node.settings.tenant_of or None,
        "central_operator": central_operator(node),
    }

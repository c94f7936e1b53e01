"""The Art. 33(3) notification draft of a breach, as a dict (``--json``), HTML and PDF.

(a) the nature of the breach with the categories and approximate numbers of data subjects and records, (b) the
contact point (the compliance contact and DPO: ``incisive compliance contact set``; marked missing when unset),
(c) the likely consequences, (d) the measures taken or proposed; then the timeline (discovery, the 72 h deadline,
notifications), the reasons for delay and every phased update. Counts and names of kinds only: the affected UIDs
stay in the breach file and are never rendered.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from incisive.common.errors import ConfigError
from incisive.node.compliance import breach, render, store
from incisive.node.home import Node

TITLE = "Personal data breach — notification to the supervisory authority (GDPR Art. 33)"


def _compliance(node: Node) -> tuple[dict[str, Any], str | None]:
    try:
        return store.load(node.home), None
    except ConfigError as exc:
        return {}, str(exc)


def report(node: Node, breach_id: str, now: datetime | None = None) -> dict[str, Any]:
    """The report's content (no UID, no pseudonym: counts, categories and the operator's own text)."""
    record = breach.load(node, breach_id)
    row = breach.state(record, now)
    comp, problem = _compliance(node)
    contact, dpo = comp.get("contact"), comp.get("dpo")
    missing = [] if contact else ["contact point (incisive compliance contact set --name … --email … --role …)"]
    numbers = record.get("numbers")
    records_total = None if numbers is None else numbers["instances"] + numbers["clinical_rows"]
    return {
        "title": TITLE, "id": record["id"], "status": record["status"], "generated_at": breach.iso(now or
                                                                                                    breach.utcnow()),
        "node": {"node_id": node.settings.node_id, "provider": node.settings.provider},
        "controller": comp.get("controller"), "authority": (comp.get("fields") or {}).get("supervisory_authority"),
        "timeline": {k: row[k] for k in ("discovered_at", "deadline", "hours_left", "overdue", "dpa_notified_at",
                                         "subjects_notified_at", "closed_at", "late_notification")}
        | {"opened_at": record["opened_at"]},
        "nature": {"summary": record["summary"], "types": record.get("nature") or [],
                   "categories": record.get("categories") or {"subjects": [], "data": []},
                   "numbers": numbers, "records_total": records_total,
                   "whole_node": bool((record.get("scope") or {}).get("all")),
                   "approximate": record.get("approximate") or {}, "pseudonymised": True},
        "contact": {"contact": contact, "dpo": dpo, "missing": missing, "problem": problem},
        "consequences": record.get("consequences") or [],
        "measures": record.get("measures") or [],
        "information": record.get("information") or [],
        "delay_reasons": record.get("delay_reasons") or [],
        "updates": record.get("updates") or [],
    }


def render_html(data: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (``node/templates/breach_report.html.j2``)."""
    return render.render_html("breach_report.html.j2", {"r": data})


def write(data: dict[str, Any], *, html_out: Path | None = None, pdf_out: Path | None = None) -> list[Path]:
    """Write the report as HTML and/or PDF (headless Chromium: :func:`render.to_pdf`); returns what was written."""
    return render.write_report(render_html(data), html_out=html_out, pdf_out=pdf_out)

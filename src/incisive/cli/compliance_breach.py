"""``incisive compliance breach open|update|close|ls|report``: the Art. 33/34 breach workflow
(:mod:`incisive.node.compliance.breach`), registered on the compliance group by :func:`register`.

Times are ISO 8601 (``2026-12-01T09:00Z``; without a zone, this machine's local time); UIDs (``--studies``,
``--series``) comma-separated or repeated, as stored or as the hospital's original UIDs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from incisive.cli.options import HomeOpt, JsonOpt
from incisive.common.output import console, err_console, print_json, table
from incisive.common.settings import resolve_home
from incisive.node.home import Node

app = typer.Typer(help="Personal-data breaches (GDPR Art. 33/34): the 72 h clock, phased updates, the report.",
                  no_args_is_help=True)

IdArg = Annotated[str, typer.Argument(help="Breach id (br-YYYY-MM-DD-xxxx; see 'breach ls')")]
TimeOpt = Annotated[str | None, typer.Option("--at", help="When this happened (ISO 8601; default: now)")]
NatureOpt = Annotated[list[str] | None, typer.Option("--nature", help="confidentiality, integrity and/or "
                                                     "availability (comma-separated or repeated)")]
StudiesOpt = Annotated[list[str] | None, typer.Option("--studies", help="Affected study UIDs (comma-separated)")]
SeriesOpt = Annotated[list[str] | None, typer.Option("--series", help="Affected series UIDs (comma-separated)")]
AllOpt = Annotated[bool, typer.Option("--all-data", help="Everything this node holds is affected")]
SubjectsOpt = Annotated[int | None, typer.Option("--approx-subjects", help="Estimated data subjects outside the "
                                                 "catalogue (e.g. a lost export)")]
RecordsOpt = Annotated[int | None, typer.Option("--approx-records", help="Estimated records outside the catalogue")]
ConsequencesOpt = Annotated[str | None, typer.Option("--consequences", help="Likely consequences (Art. 33(3)(c))")]
MeasuresOpt = Annotated[str | None, typer.Option("--measures", help="A measure taken (Art. 33(3)(d))")]
DelayOpt = Annotated[str | None, typer.Option("--delay-reason", help="Reasons for the delay (Art. 33(1))")]


def _node(home: Path | None) -> Node:
    return Node.open(resolve_home(home))


def _time(value: str | None, what: str) -> datetime | None:
    from incisive.node.compliance.breach import parse_time

    return None if value is None else parse_time(value, what)


def _left(row: dict[str, Any]) -> str:
    if row["status"] != "open":
        return ""
    if row["notified"]:
        return "notified"
    if row["overdue"]:
        return f"[red]OVERDUE by {-row['hours_left']:.1f} h[/]"
    return f"{row['hours_left']:.1f} h left"


def _numbers(numbers: dict[str, int]) -> str:
    from incisive.node.compliance.breach_scope import NUMBER_KEYS

    return ", ".join(f"{numbers.get(k, 0)} {k.replace('_', ' ')}" for k in NUMBER_KEYS)


def _show(record: dict[str, Any], json_out: bool, verb: str) -> None:
    from incisive.node.compliance.breach import state

    row = state(record)
    if json_out:
        print_json({k: v for k, v in record.items() if k != "scope"} | {"state": row})
        return
    console.print(f"breach [bold]{row['id']}[/] {verb}: discovered {row['discovered_at']}, 72 h deadline "
                  f"{row['deadline']} {_left(row)}".rstrip())
    if record.get("numbers"):
        console.print(f"affected: {_numbers(record['numbers'])}")


@app.command("open")
def open_cmd(
    summary: Annotated[str, typer.Option("--summary", help="What happened (no names, ids or UIDs)")],
    discovered: Annotated[str | None, typer.Option("--discovered", help="When the breach became known "
                                                   "(ISO 8601, default now): starts the 72 h clock")] = None,
    nature: NatureOpt = None, studies: StudiesOpt = None, series: SeriesOpt = None, all_data: AllOpt = False,
    approx_subjects: SubjectsOpt = None, approx_records: RecordsOpt = None,
    consequences: ConsequencesOpt = None, measures: MeasuresOpt = None,
    home: HomeOpt = None, json_out: JsonOpt = False,
) -> None:
    """Open a breach record: the 72 h deadline runs from --discovered; counts from the catalogue."""
    from incisive.node.compliance.breach import open_breach

    record = open_breach(_node(home), summary, discovered=_time(discovered, "--discovered"), nature=nature or [],
                         studies=studies or [], series=series or [], all_data=all_data,
                         approx_subjects=approx_subjects, approx_records=approx_records,
                         consequences=consequences, measures=measures)
    _show(record, json_out, "opened")


@app.command("update")
def update_cmd(
    breach_id: IdArg,
    at: TimeOpt = None,
    info: Annotated[str | None, typer.Option("--info", help="Further information (phased, Art. 33(4))")] = None,
    measures: MeasuresOpt = None,
    proposed: Annotated[str | None, typer.Option("--proposed", help="A measure proposed")] = None,
    consequences: ConsequencesOpt = None, delay_reason: DelayOpt = None,
    dpa_notified_at: Annotated[str | None, typer.Option("--dpa-notified-at", help="When the supervisory "
                                                        "authority was notified (ISO 8601)")] = None,
    subjects_notified_at: Annotated[str | None, typer.Option("--subjects-notified-at", help="When the data "
                                                             "subjects were told (Art. 34; ISO 8601)")] = None,
    nature: NatureOpt = None, studies: StudiesOpt = None, series: SeriesOpt = None, all_data: AllOpt = False,
    approx_subjects: SubjectsOpt = None, approx_records: RecordsOpt = None,
    home: HomeOpt = None, json_out: JsonOpt = False,
) -> None:
    """Add a phased update: information, measures, consequences, reasons for delay, notifications, scope."""
    from incisive.node.compliance.breach import update_breach

    record = update_breach(_node(home), breach_id, at=_time(at, "--at"), information=info, measures=measures,
                           proposed=proposed, consequences=consequences, delay_reason=delay_reason,
                           dpa_notified_at=_time(dpa_notified_at, "--dpa-notified-at"),
                           subjects_notified_at=_time(subjects_notified_at, "--subjects-notified-at"),
                           nature=nature or [], studies=studies or [], series=series or [], all_data=all_data,
                           approx_subjects=approx_subjects, approx_records=approx_records)
    _show(record, json_out, "updated")


@app.command("close")
def close_cmd(
    breach_id: IdArg, at: TimeOpt = None, measures: MeasuresOpt = None, delay_reason: DelayOpt = None,
    home: HomeOpt = None, json_out: JsonOpt = False,
) -> None:
    """Close a breach (refused without a measures entry; past the deadline un-notified, a delay reason)."""
    from incisive.node.compliance.breach import close_breach

    record = close_breach(_node(home), breach_id, at=_time(at, "--at"), measures=measures,
                          delay_reason=delay_reason)
    _show(record, json_out, "closed")


@app.command("ls")
def ls_cmd(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Every breach: open ones first, with the 72 h deadline and the hours left."""
    from incisive.node.compliance.breach import list_breaches

    rows = list_breaches(_node(home))
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no breach recorded")
        return
    console.print(table("Breaches", ["id", "status", "discovered", "deadline (72 h)", "left", "authority notified",
                                     "patients", "measures"],
                        [(r["id"], r["status"], r.get("discovered_at", ""), r.get("deadline", ""),
                          _left(r) if r["status"] != "unreadable" else "",
                          r.get("dpa_notified_at") or ("" if r["status"] == "unreadable" else "no"),
                          (r.get("numbers") or {}).get("patients", ""), r.get("measures", ""))
                         for r in rows]))


@app.command("report")
def report_cmd(
    breach_id: IdArg,
    html: Annotated[Path | None, typer.Option("--html", help="Write the report as HTML here")] = None,
    pdf: Annotated[Path | None, typer.Option("--pdf", help="Write the report as PDF here (headless Chromium)")]
    = None,
    home: HomeOpt = None, json_out: JsonOpt = False,
) -> None:
    """The Art. 33(3) notification draft: nature and numbers, contact point, consequences, measures."""
    from incisive.node.compliance import breach_report

    data = breach_report.report(_node(home), breach_id)
    say = err_console if json_out else console  # stdout stays JSON
    for path in breach_report.write(data, html_out=html, pdf_out=pdf):
        say.print(f"wrote {path}")
    if json_out:
        print_json(data)
    elif html is None and pdf is None:
        n = data["nature"]
        console.print(f"[bold]{data['title']}[/]\nbreach {data['id']} ({data['status']}), deadline "
                      f"{data['timeline']['deadline']}\n(a) {n['summary']}")
        if n["numbers"]:
            console.print(f"    {_numbers(n['numbers'])}")
        contact = data["contact"]["contact"]
        console.print(f"(b) {contact['name']} <{contact['email']}>" if contact else "(b) contact point MISSING")
        console.print(f"(c) {len(data['consequences'])} entries; (d) {len(data['measures'])} measures "
                      "(--html/--pdf/--json for the whole report)")


def register(parent: typer.Typer) -> None:
    """Add the ``breach`` sub-group to ``incisive compliance``."""
    parent.add_typer(app, name="breach")

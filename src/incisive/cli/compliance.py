"""``incisive compliance …``: GDPR duties of a node, from what it knows (logic in :mod:`incisive.node.compliance`).

``contact set``, ``set`` (the facts asked once), ``show``, ``processor add | update | rm | ls``, ``residency``,
``ropa``, ``check`` and ``pack`` live here. The breach and data-subject commands register themselves on
:data:`app` through a ``register(app)`` function in each module of :data:`EXTRA_MODULES` that is installed.
Every command takes ``--home`` (a Central Node tenant's directory is ``<central>/tenants/<id>``). docs/compliance.md
maps each command to the GDPR article and the node specification section it serves.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from incisive.cli.options import HomeOpt, JsonOpt
from incisive.common.errors import InputError
from incisive.common.exit_codes import ExitCode
from incisive.common.output import console, print_json, table
from incisive.common.settings import resolve_home
from incisive.node.compliance import processors as processors_mod
from incisive.node.compliance import store
from incisive.node.compliance.check import failing, findings
from incisive.node.compliance.pack import build_pack
from incisive.node.compliance.render import render_ropa, write_report
from incisive.node.compliance.residency import residency as residency_report
from incisive.node.compliance.ropa import build_ropa
from incisive.node.home import Node

EXTRA_MODULES = ("incisive.cli.compliance_breach", "incisive.cli.compliance_subject")

app = typer.Typer(help="GDPR records: RoPA, processors, residency, breaches, data-subject requests.",
                  no_args_is_help=True)
contact_app = typer.Typer(help="The node's designated contact person and DPO.", no_args_is_help=True)
processor_app = typer.Typer(help="The processor register (Art. 28) with the Art. 28(3) checklist.",
                            no_args_is_help=True)
app.add_typer(contact_app, name="contact")
app.add_typer(processor_app, name="processor")

ChecklistOpt = Annotated[list[str] | None, typer.Option(
    "--checklist", help=f"ITEM=yes|no of the Art. 28(3) checklist, repeatable (all=yes sets every item): "
                        f"{', '.join(processors_mod.CHECKLIST)}")]
OtherOpt = Annotated[list[Path] | None, typer.Option("--other", help="A further PDF to file with it (repeatable)")]
STATUS = {"eu_eea": "[green]EU/EEA[/]", "safeguarded": "[yellow]transfer, safeguarded[/]",
          "transfer": "[bold red]transfer without safeguards[/]", "unknown": "[bold red]not recorded[/]"}


def _node(home: Path | None) -> Node:
    return Node.open(resolve_home(home))


@contact_app.command("set")
def contact_set(
    name: Annotated[str, typer.Option("--name", help="Contact person's name")],
    email: Annotated[str, typer.Option("--email", help="Contact person's e-mail")],
    role: Annotated[str, typer.Option("--role", help='Role, e.g. "technical contact"')],
    dpo_name: Annotated[str | None, typer.Option("--dpo-name", help="Data protection officer's name")] = None,
    dpo_email: Annotated[str | None, typer.Option("--dpo-email", help="Data protection officer's e-mail")] = None,
    home: HomeOpt = None,
) -> None:
    """Record the node's designated contact person (and the DPO)."""
    node = _node(home)
    data = store.set_contact(node.home, name, email, role, dpo_name, dpo_email)
    console.print(f"contact recorded: {data['contact']['name']} ({data['contact']['role']})"
                  + (f"; DPO {data['dpo']['name']}" if data.get("dpo") else "; no DPO recorded yet"),
                  highlight=False)


@app.command("set")
def set_field(
    key: Annotated[str, typer.Argument(help=f"One of {', '.join(store.FIELDS)}, or backup-location")],
    values: Annotated[list[str], typer.Argument(help="The value (backup-location: TARGET COUNTRY)")],
    processor: Annotated[str | None, typer.Option(
        "--processor", help="backup-location: id of the registered processor that keeps the copies")] = None,
    home: HomeOpt = None,
) -> None:
    """Record a fact the system cannot know (asked once); an empty value clears an optional field."""
    node = _node(home)
    if key == "backup-location":
        if len(values) != 2:
            raise InputError("usage: incisive compliance set backup-location TARGET COUNTRY")
        store.set_backup_location(node.home, values[0], values[1], processor)
        console.print(f"backup target {values[0]}: location recorded", highlight=False)
        return
    if processor is not None:
        raise InputError("--processor goes with backup-location only")
    if len(values) != 1:
        raise InputError(f"usage: incisive compliance set {key} VALUE (quote a value with spaces)")
    store.set_field(node.home, key, values[0])
    console.print(f"{key} recorded", highlight=False)


@app.command()
def show(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """The recorded facts, and which required ones are missing."""
    node = _node(home)
    data = store.load(node.home)
    missing = store.missing_fields(data, bool(node.settings.tenant_of))
    if json_out:
        print_json({**data, "missing": missing})
        return
    rows: list[tuple[str, Any]] = [
        ("contact", "; ".join(str(v) for v in (data.get("contact") or {}).values()) or None),
        ("dpo", "; ".join(str(v) for v in (data.get("dpo") or {}).values()) or None)]
    rows += [(key, store.field_value(data, key)) for key in store.FIELDS]
    rows += [(f"backup-location {t}", c) for t, c in sorted(data["backup_locations"].items())]
    console.print(table("Compliance record", ["field", "value"],
                        [(k, "MISSING" if k in missing else ("" if v is None else v)) for k, v in rows]))


@processor_app.command("add")
def processor_add(
    name: Annotated[str, typer.Argument(help='The processor\'s legal name, e.g. "CloudCo GmbH"')],
    service: Annotated[str, typer.Option("--service", help="What it does for the node: hosting, backup, …")],
    country: Annotated[str, typer.Option("--country", help="Where it processes the data (ISO 3166-1 alpha-2)")],
    dpa_signed: Annotated[str, typer.Option("--dpa-signed", help="Date the DPA was signed (YYYY-MM-DD)")],
    document: Annotated[Path, typer.Option("--document", help="The signed data-processing agreement (PDF)")],
    scc: Annotated[bool, typer.Option("--scc", help="Standard contractual clauses signed (outside EU/EEA)")] = False,
    tia: Annotated[Path | None, typer.Option("--tia", help="Transfer impact assessment (PDF)")] = None,
    checklist: ChecklistOpt = None,
    other: OtherOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a processor; its documents are copied into the node with their sha256."""
    node = _node(home)
    entry = processors_mod.add_processor(node.home, name, service, country, dpa_signed, document, scc, tia,
                                         checklist or [], other or [])
    if json_out:
        print_json(entry)
        return
    console.print(f"processor [bold]{entry['id']}[/] registered ({entry['country']}, "
                  f"{len(entry['documents'])} document(s) filed)", highlight=False)


@processor_app.command("update")
def processor_update(
    ident: Annotated[str, typer.Argument(help="Processor id (processor ls) or exact name")],
    service: Annotated[str | None, typer.Option("--service", help="What it does for the node")] = None,
    country: Annotated[str | None, typer.Option("--country", help="ISO 3166-1 alpha-2 country")] = None,
    dpa_signed: Annotated[str | None, typer.Option("--dpa-signed", help="Date the DPA was signed")] = None,
    document: Annotated[Path | None, typer.Option("--document", help="A new signed DPA (PDF)")] = None,
    scc: Annotated[bool | None, typer.Option("--scc/--no-scc", help="Standard contractual clauses signed")] = None,
    tia: Annotated[Path | None, typer.Option("--tia", help="A (new) transfer impact assessment (PDF)")] = None,
    checklist: ChecklistOpt = None,
    other: OtherOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a processor's record (a new document replaces the one of its kind; old files stay filed)."""
    node = _node(home)
    entry = processors_mod.update_processor(node.home, ident, service=service, country=country,
                                            dpa_signed=dpa_signed, document=document, scc=scc, tia=tia,
                                            checklist=checklist or [], others=other or [])
    if json_out:
        print_json(entry)
        return
    console.print(f"processor [bold]{entry['id']}[/] updated", highlight=False)


@processor_app.command("rm")
def processor_rm(ident: Annotated[str, typer.Argument(help="Processor id or exact name")],
                 home: HomeOpt = None) -> None:
    """Take a processor off the register (its filed documents stay)."""
    entry = processors_mod.remove_processor(_node(home).home, ident)
    console.print(f"processor {entry['id']} removed from the register", highlight=False)


@processor_app.command("ls")
def processor_ls(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Every registered processor: country, DPA, SCC/TIA, missing checklist items."""
    rows = processors_mod.list_processors(_node(home).home)
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no processor registered (incisive compliance processor add …)")
    for p in rows:
        where = p["country"] + ("" if p["eu_eea"] else " [bold red](outside the EU/EEA)[/]")
        console.print(f"[bold]{p['id']}[/] {escape(p['name'])}: {escape(p['service'])}, {where}; DPA signed "
                      f"{p['dpa_signed']}; SCC {'yes' if p['scc'] else 'no'}; TIA {'yes' if p['has_tia'] else 'no'}; "
                      f"Art. 28(3) items missing: {', '.join(p['checklist_missing']) or 'none'}", highlight=False)


@app.command()
def residency(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Where the node, its backup targets and its processors are: EU/EEA, or a transfer and its safeguard."""
    report = residency_report(_node(home))
    if json_out:
        print_json(report)
        return
    for r in [report["node"], *report["backup_targets"], *report["processors"]]:
        console.print(f"{r['kind']:<9} {r['subject']}: {r['country'] or '?'} — {STATUS[r['status']]}")
        if r["status"] != "eu_eea":
            console.print(f"          needs: {r['safeguard']}", highlight=False)


@app.command()
def ropa(
    json_out: JsonOpt = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write the record as HTML to this file")] = None,
    pdf: Annotated[Path | None, typer.Option("--pdf", help="Write the record as PDF (headless Chromium)")] = None,
    home: HomeOpt = None,
) -> None:
    """The record of processing activities (Art. 30), generated from the node; missing facts marked."""
    record = build_ropa(_node(home))
    if html is not None or pdf is not None:
        for path in write_report(render_ropa(record), html_out=html, pdf_out=pdf):
            console.print(f"written: {path}", highlight=False)
    if json_out:
        print_json(record)
    elif html is None and pdf is None:
        console.print(f"[bold]Record of processing activities[/]: {record['node']['provider']}", highlight=False)
        for m in record["measures"]:
            console.print(f"  {m['status']:>5}  {m['title']}: {m['evidence']}", highlight=False)
        console.print("missing: " + (", ".join(record["missing"]) or "nothing"), highlight=False)
        console.print("full record: --json, --html FILE or --pdf FILE")


@app.command()
def check(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Every compliance finding; exit 1 while any failing finding remains."""
    found = findings(_node(home))
    bad = failing(found)
    if json_out:
        print_json({"findings": [f.as_dict() for f in found], "failing": len(bad)})
    elif not found:
        console.print("[green]no findings[/]")
    else:
        for f in found:
            style = "bold red" if f.severity == "fail" else "yellow"
            console.print(f"[{style}]{f.severity}[/] {f.code} [bold]{escape(f.subject)}[/]: {escape(f.message)}")
            console.print(f"     fix: {escape(f.fix)}", highlight=False)
        console.print(f"{len(bad)} failing, {len(found) - len(bad)} warning(s)")
    if bad:
        raise typer.Exit(ExitCode.PROBLEMS)


@app.command()
def pack(
    out: Annotated[Path, typer.Option("--out", help="The evidence zip to write, e.g. evidence.zip")],
    readiness: Annotated[bool, typer.Option(
        "--readiness/--no-readiness", help="Run the readiness check now (else the last recorded result)")] = True,
    pdf: Annotated[bool, typer.Option("--pdf", help="Add ropa.pdf (needs Chromium)")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Everything for the project's privacy assessment in one zip, with a manifest of sha256s."""
    manifest = build_pack(_node(home), out, readiness=readiness, pdf=pdf)
    if json_out:
        print_json(manifest)
        return
    console.print(f"evidence pack written: {out} ({len(manifest['files'])} files)", highlight=False)
    for problem in manifest["problems"]:
        console.print(f"[yellow]not included[/]: {problem}", highlight=False)


def _register_extras() -> None:
    for module in EXTRA_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(app)


_register_extras()

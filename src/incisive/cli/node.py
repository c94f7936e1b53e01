"""``incisive node …``: the data manager's commands (one function per sub-command, logic in services).

The node's other sub-commands live beside this module and are attached at the end: ``check`` (:mod:`.check`),
``token`` (:mod:`.token`), ``serve`` (:mod:`.serve`), ``status`` (:mod:`.status`), ``enrol`` / ``agent``
(:mod:`.agent`) and ``policy`` (:mod:`.policy`). None of them imports PyTorch, Flower or the platform."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from incisive.cli import agent as agent_cmds
from incisive.cli import check as check_cmd
from incisive.cli import policy as policy_cmds
from incisive.cli import serve as serve_cmd
from incisive.cli import services as services_cmds
from incisive.cli import status as status_cmd
from incisive.cli import token as token_cmds
from incisive.cli.options import HomeOpt, JsonOpt
from incisive.common.errors import InputError
from incisive.common.exit_codes import ExitCode
from incisive.common.output import console, err_console, human_bytes, print_json, table
from incisive.common.settings import resolve_home
from incisive.node.catalogue import queries
from incisive.node.fsck import fsck
from incisive.node.home import Node
from incisive.node.ingest.clinical import check_columns, import_clinical, read_csv
from incisive.node.ingest.dicom_import import OUTCOMES, import_dicom
from incisive.node.quality import quality_report, render_html, render_rich
from incisive.node.tenancy import provider_only

app = typer.Typer(help="Run and manage a federated node.", no_args_is_help=True)



@app.command()
def init(
    home: Annotated[Path, typer.Argument(help="Directory to create the node in")],
    provider: Annotated[str, typer.Option(help="Data provider (hospital) name")],
    node_id: Annotated[str | None, typer.Option(help="Node identifier (default: from the provider name)")] = None,
    catalogue_url: Annotated[
        str, typer.Option(help="SQLAlchemy URL of the catalogue (default: SQLite in the node directory)")
    ] = "",
    json_out: JsonOpt = False,
) -> None:
    """Create a node: settings, a new pseudonym key, object store, quarantine and catalogue."""
    node = Node.init(home, provider=provider, node_id=node_id, catalogue_url=catalogue_url)
    info = {"home": str(node.home), "node_id": node.settings.node_id, "provider": node.settings.provider,
            "catalogue": node.catalogue.dialect, "key_file": str(node.key_path)}
    if json_out:
        print_json(info)
        return
    console.print(f"[green]initialised node[/] {info['node_id']} at {info['home']}")
    console.print(f"pseudonym key: {info['key_file']} (mode 0600; keep it on this machine, back it up offline)")


def open_node(home: Path | None) -> Node:
    return Node.open(resolve_home(home))


def _progress(description: str, enabled: bool) -> Any:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TimeRemainingColumn()]
    return Progress(*columns, console=err_console, transient=True, disable=not enabled)


def _without_paths(node: Node, report: dict[str, Any]) -> dict[str, Any]:
    """The import report as printed: a problem file is named by the keyed digest of its relative path (the
    catalogue's ``import_issue.file_digest``), never by the path, which can hold a patient's name or MRN."""
    problems = [{"file_digest": node.pseudonymiser.digest("import-file", p["file"]), "outcome": p["outcome"],
                 "reason": p["reason"]} for p in report.get("problems", [])]
    return {**report, "problems": problems}


@app.command("import")
def import_(
    source: Annotated[Path | None, typer.Argument(help="DICOM file or folder (recursive)")] = None,
    clinical: Annotated[Path | None, typer.Option(help="Clinical CSV to import")] = None,
    id_column: Annotated[str, typer.Option(help="Patient id column of the clinical CSV")] = "patient_id",
    drop: Annotated[str, typer.Option(help="Comma-separated CSV columns to drop (identifiers)")] = "",
    labels: Annotated[str, typer.Option(help="Comma-separated CSV columns that are labels")] = "",
    encoding: Annotated[str, typer.Option(help="Encoding of the clinical CSV")] = "utf-8-sig",
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (0 = one per core)")] = 0,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Import DICOM (pseudonymised at the door) and/or a clinical CSV; prints a summary."""
    if source is None and clinical is None:
        raise InputError("give a DICOM folder, --clinical CSV, or both")
    if source is not None and not source.exists():
        raise InputError("the DICOM source given does not exist")  # paths are not echoed: they can carry names
    node = open_node(home)
    if clinical is not None:  # refuse a bad CSV before touching any DICOM
        check_columns(read_csv(clinical, encoding)[0], id_column, _csv_list(drop))
    result: dict[str, Any] = {}
    if source is not None:
        with _progress("de-identifying", not json_out) as bar:
            task = bar.add_task("de-identifying", total=None)
            report = import_dicom(node, source, lambda done, total: bar.update(task, completed=done, total=total),
                                  workers or None)
        result["dicom"] = _without_paths(node, report.as_dict())
    if clinical is not None:
        result["clinical"] = import_clinical(
            node, clinical, id_column=id_column, drop=_csv_list(drop), encoding=encoding,
            label_columns=_csv_list(labels),
        ).as_dict()
    if json_out:
        print_json(result)
        return
    if "dicom" in result:
        d = result["dicom"]
        console.print(table("DICOM import", ["outcome", "files"], ((k, d[k]) for k in OUTCOMES)))
        console.print(f"stored {human_bytes(d['bytes_stored'])} of new objects (run {d['run_id']})")
        if d["removed_beyond_table"]:
            console.print(table("Removed beyond Table E.1-1 (fail-closed)", ["attribute", "values"],
                                sorted(d["removed_beyond_table"].items(), key=lambda kv: -kv[1])[:20]))
        if d["problems"]:
            console.print(table("Not stored", ["file (keyed digest)", "outcome", "reason"],
                                ((p["file_digest"][:16], p["outcome"], p["reason"]) for p in d["problems"][:50])))
            if len(d["problems"]) > 50:
                console.print(f"… and {len(d['problems']) - 50} more (use --json for all)")
    if "clinical" in result:
        c = result["clinical"]
        console.print(f"clinical: {c['records']} new, {c['updated']} updated, {c['rejected']} rejected rows, "
                      f"{c['dropped_columns']} column(s) dropped")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@app.command()
def stats(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Patients / studies / series / instances / bytes, by modality."""
    node = open_node(home)
    with node.catalogue.session() as s:
        data = queries.stats(s)
    if json_out:
        print_json(data)
        return
    console.print(table("Node contents", ["", "count"],
                        [(k, human_bytes(v) if k == "bytes" else v) for k, v in data.items() if k != "by_modality"]))
    console.print(table("By modality", ["modality", "patients", "studies", "series", "instances", "size"],
                        [(m["modality"], m["patients"], m["studies"], m["series"], m["instances"],
                          human_bytes(m["bytes"])) for m in data["by_modality"]]))


class Level(StrEnum):
    studies = "studies"
    series = "series"


@app.command("ls")
def ls(
    level: Annotated[Level, typer.Argument(help="studies or series")],
    modality: Annotated[str | None, typer.Option(help="Only this modality (CT, MR, MG …)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 1000,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List pseudonymised studies or series."""
    node = open_node(home)
    provider_only(node, "node ls", "the provider reads its tenant over QIDO-RS with its own token")
    with node.catalogue.session() as s:
        fn = queries.list_studies if level is Level.studies else queries.list_series
        rows = fn(s, modality=modality, limit=limit, offset=offset)
    if json_out:
        print_json(rows)
        return
    if level is Level.studies:
        console.print(table(f"Studies ({len(rows)})", ["study uid", "patient", "date", "modalities", "series",
                                                       "instances", "description"],
                            [(r["study_uid"], r["patient"], r["study_date"], ",".join(r["modalities"]), r["series"],
                              r["instances"], r["description"]) for r in rows]))
    else:
        console.print(table(f"Series ({len(rows)})", ["series uid", "patient", "modality", "body part",
                                                      "instances", "size", "description"],
                            [(r["series_uid"], r["patient"], r["modality"], r["body_part"], r["instances"],
                              human_bytes(r["bytes"]), r["description"]) for r in rows]))


@app.command()
def quality(
    html: Annotated[Path | None, typer.Option(help="Also write an HTML report to this file")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Data-quality report: coverage, clinical completeness, label balance, image geometry."""
    node = open_node(home)
    with node.catalogue.session() as s:
        report = quality_report(s)
    if html is not None:
        html.write_text(render_html(report, f"Data quality — {node.settings.provider}"), encoding="utf-8")
    if json_out:
        print_json(report)
        return
    console.print(render_rich(report))
    if html is not None:
        console.print(f"HTML report written to {html}")


@app.command("fsck")
def fsck_(
    repair: Annotated[bool, typer.Option(help="Fix what can be fixed (see docs)")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Reconcile store and catalogue and verify every object's checksum. Exit 1 when problems remain."""
    node = open_node(home)
    with _progress("verifying", not json_out) as bar:
        task = bar.add_task("verifying objects", total=None)
        report = fsck(node, repair=repair, progress=lambda d, t: bar.update(task, completed=d, total=t))
    if json_out:
        print_json(report.as_dict())
    else:
        console.print(table("fsck", ["check", "result"], [
            ("catalogue rows checked", report.rows_checked), ("objects verified", report.objects_checked),
            ("missing objects", len(report.missing)), ("corrupt objects", len(report.corrupt)),
            ("orphan objects", len(report.orphans)), ("partial writes", report.partial_writes),
        ]))
        for digest in report.corrupt:
            console.print(f"[red]corrupt[/] {digest}")
        for digest in report.missing:
            console.print(f"[red]missing[/] {digest}")
        if report.repaired:
            console.print(f"repaired: {report.repaired}")
        console.print("[green]clean[/]" if report.clean else "[yellow]problems found[/]")
    if not report.clean and not repair:
        raise typer.Exit(ExitCode.PROBLEMS)


@app.command()
def migrate(home: HomeOpt = None) -> None:
    """Bring the catalogue schema to the latest revision (after an upgrade)."""
    node = Node.open(resolve_home(home), check_schema=False)
    node.catalogue.migrate()
    console.print("catalogue schema is up to date")


app.command("check")(check_cmd.check)
app.command("serve")(serve_cmd.serve)
app.add_typer(token_cmds.app, name="token")
app.command("status")(status_cmd.status)
app.command("enrol")(agent_cmds.enrol)
app.command("agent")(agent_cmds.agent)
app.add_typer(policy_cmds.app, name="policy")
app.command("install-services")(services_cmds.node_install_services)

"""``incisive upload …``: the provider's side of a Central Node (runs at the hospital).

``incisive upload init DIR --provider NAME`` makes an uploader directory with the provider's own pseudonym key;
``incisive upload FOLDER [--clinical CSV] --to URL --token T`` (the same as ``incisive upload run …``)
de-identifies at the hospital and sends only what the de-identifier let through (:mod:`incisive.node.upload`).
The token is read from the option or ``$INCISIVE_UPLOAD_TOKEN`` and never printed or logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from incisive.cli.options import UPLOAD_TOKEN_ENV, UPLOAD_TOKEN_HELP, JsonOpt
from incisive.common.errors import InputError
from incisive.common.exit_codes import ExitCode
from incisive.common.output import console, err_console, human_bytes, print_json, table
from incisive.node.upload.home import UPLOADER_ENV, Uploader, resolve_home
from incisive.node.upload.run import upload as run_upload

RUN = "run"


class _DefaultRun(TyperGroup):
    """``incisive upload FOLDER …`` means ``incisive upload run FOLDER …`` (the issue's syntax)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [RUN, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_DefaultRun, no_args_is_help=True, help=(
    "Pseudonymise at the hospital and upload to a Central Node.\n\n"
    "incisive upload init DIR --provider NAME   (once: the provider's own pseudonym key)\n\n"
    "incisive upload FOLDER [--clinical CSV] --to URL --token T   (same as 'incisive upload run ...')"))

UploaderOpt = Annotated[Path | None, typer.Option(
    "--uploader", "-u", help=f"Uploader directory (default: ${UPLOADER_ENV} or the current directory)")]


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Uploader directory to create (0700)")],
    provider: Annotated[str, typer.Option(help="Data provider (hospital) name")],
    json_out: JsonOpt = False,
) -> None:
    """Create an uploader directory with the provider's own pseudonym key (0600; never sent: back it up offline)."""
    uploader = Uploader.init(directory, provider)
    info = {"uploader": str(uploader.home), "provider": uploader.settings.provider,
            "key": str(uploader.key_path)}
    if json_out:
        print_json(info)
        return
    console.print(f"uploader created in {uploader.home}")
    console.print(f"pseudonym key: {uploader.key_path} (0600) — it never leaves this machine; back it up offline, "
                  "losing it gives the same patients new pseudonyms")


def _progress(enabled: bool) -> Progress:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[sent]}"), TimeRemainingColumn()]
    return Progress(*columns, console=err_console, transient=True, disable=not enabled)


def _csv_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


@app.command(RUN)
def run(
    folder: Annotated[Path | None, typer.Argument(help="DICOM file or folder (recursive)")] = None,
    to: Annotated[str, typer.Option("--to", help="The Central Node's URL, e.g. https://central.example")] = "",
    token: Annotated[str, typer.Option("--token", envvar=UPLOAD_TOKEN_ENV, help=UPLOAD_TOKEN_HELP,
                                       show_default=False, show_envvar=False)] = "",
    clinical: Annotated[Path | None, typer.Option(help="Clinical CSV to pseudonymise and upload")] = None,
    id_column: Annotated[str, typer.Option(help="Patient id column of the clinical CSV")] = "patient_id",
    drop: Annotated[str, typer.Option(help="Comma-separated CSV columns to drop (identifiers)")] = "",
    encoding: Annotated[str, typer.Option(help="Encoding of the clinical CSV")] = "utf-8-sig",
    ca_file: Annotated[Path | None, typer.Option(help="CA bundle that signed the Central Node's certificate "
                                                      "(a private CA); default: the system store")] = None,
    uploader_dir: UploaderOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """De-identify FOLDER here and upload it (and --clinical) to the Central Node; a rerun resumes.

    Only what the de-identifier let through is sent; what the Central Node acknowledged is kept in the uploader's
    journal, so a rerun after a cut sends only the rest."""
    if folder is None and clinical is None:
        raise InputError("give a DICOM folder, --clinical CSV, or both")
    if not to:
        raise InputError("give --to URL (the Central Node)")
    if folder is not None and not folder.exists():
        raise InputError("the DICOM folder given does not exist")  # paths are not echoed: they can carry names
    uploader = Uploader.open(resolve_home(uploader_dir))
    with _progress(not json_out) as bar:
        task = bar.add_task("uploading", total=None, sent="")

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def on_batch(batches: int) -> None:
            bar.update(task, sent=f"{batches} batches sent")

        report = run_upload(uploader, folder, to, token, clinical=clinical, ca_file=ca_file, id_column=id_column,
                            drop=_csv_list(drop), encoding=encoding, progress=progress, on_batch=on_batch)
    result = report.as_dict()
    if json_out:
        print_json(result)
    else:
        _print(result)
    if result["unacknowledged"]:
        raise typer.Exit(ExitCode.PROBLEMS)


def _print(r: dict[str, Any]) -> None:
    rows = [("files found", r["files"]), ("already done (journal)", r["skipped"]), ("sent and stored", r["sent"]),
            ("already at the Central Node", r["duplicates"]), ("quarantined at the Central Node", r["held_at_central"]),
            ("held back here (quarantine)", r["quarantined"]), ("rejected", r["rejected_total"])]
    console.print(table("Upload", ["outcome", "instances"], rows))
    console.print(f"{human_bytes(r['bytes'])} acknowledged in {r['batches']} batches, {r['seconds']:.1f} s"
                  + (f", {r['retries']} retries" if r["retries"] else ""))
    if r["rejected"]:
        console.print(table("Rejected", ["reason", "instances"], sorted(r["rejected"].items(), key=lambda kv: -kv[1])))
    if r["unacknowledged"]:
        console.print(f"[yellow]{r['unacknowledged']} instances were not acknowledged; run again to resend them[/]")
    c = r.get("clinical")
    if c:
        state = "unchanged since the last upload" if c.get("skipped") else \
            f"{c['stored']} stored, {c['duplicates']} already there"
        console.print(f"clinical rows: {c['rows']} ({state}); {c['without_patient_id']} without a patient id")

"""``incisive compliance subject lookup|erase|ls`` and ``incisive compliance access-report``: data-subject requests
(:mod:`incisive.node.compliance.subjects`) and the access report (:mod:`incisive.node.compliance.access`),
registered on the compliance group by :func:`register`.

On a node (``--home``) the pseudonym is computed with the node's key. For a Central Node tenant the provider runs
the same commands with ``--uploader DIR --central URL --token T``: the pseudonym is computed with the uploader's
key on the provider's machine and only it is sent (``/tenant/v1/subjects``); the identifier never leaves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from incisive.cli.central_tenant import TOKEN_ENV, URL_ENV, TokenOpt, UrlOpt
from incisive.cli.options import HomeOpt, JsonOpt
from incisive.common.errors import InputError
from incisive.common.exit_codes import ExitCode
from incisive.common.output import console, print_json, table
from incisive.common.settings import resolve_home
from incisive.node.home import Node

app = typer.Typer(help="Data-subject requests (GDPR Art. 15, 17): lookup and erase by the patient's identifier.",
                  no_args_is_help=True)

PatientOpt = Annotated[str | None, typer.Option("--patient-id", help="The patient's identifier as in your systems "
                                                "(PatientID / the clinical id column); never stored or sent")]
UploaderOpt = Annotated[Path | None, typer.Option("--uploader", help="Central Node tenant: your uploader directory "
                                                  "(its pseudonym key); with --central and --token")]


def _node(home: Path | None) -> Node:
    return Node.open(resolve_home(home))


def _remote(uploader: Path | None, url: str | None) -> tuple[Path, str] | None:
    """(uploader directory, Central Node URL) when the request goes to a Central Node tenant, else None."""
    if uploader is None and url is None:
        return None
    from incisive.node.upload.home import resolve_home as uploader_home

    where = url or os.environ.get(URL_ENV, "")
    if not where:
        raise InputError(f"give --central URL or set {URL_ENV}")
    return uploader_home(uploader), where


def _token(token: str | None) -> str:
    return token or os.environ.get(TOKEN_ENV, "")


def _patient(patient_id: str | None) -> str:
    if not patient_id or not patient_id.strip():
        raise InputError("give --patient-id")
    return patient_id


def _counts(data: dict[str, Any]) -> None:
    counts = data.get("counts") or data.get("erased") or {}
    console.print(table("Held of this patient" if "counts" in data else "Erased", ["what", "count"],
                        [(k, v) for k, v in counts.items()]))


@app.command("lookup")
def lookup(patient_id: PatientOpt = None, uploader: UploaderOpt = None, central: UrlOpt = None,
           token: TokenOpt = None, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """The patient's pseudonym and what is held of them (counts only, no UIDs)."""
    from incisive.node.compliance import subjects

    pid = _patient(patient_id)
    remote = _remote(uploader, central)
    if remote is not None:
        data = subjects.remote_lookup(remote[0], pid, remote[1], _token(token))
    else:
        data = subjects.lookup(_node(home), pid)
    if json_out:
        print_json(data)
        return
    console.print(f"pseudonym [bold]{data['pseudonym']}[/]: " + ("held" if data["held"] else "[yellow]not held[/]"))
    _counts(data)
    if data.get("erasures"):
        console.print(f"erased before: {', '.join(data['erasures'])}")


@app.command("erase")
def erase(patient_id: PatientOpt = None,
          reason: Annotated[str, typer.Option("--reason", help="Why (e.g. your request ticket); kept in the record; "
                                              "must not name the patient")] = "",
          confirm: Annotated[bool, typer.Option("--confirm", help="Yes: remove the patient's data for good")] = False,
          resume: Annotated[bool, typer.Option("--resume", help="Finish interrupted erases (no --patient-id needed)")
                            ] = False,
          uploader: UploaderOpt = None, central: UrlOpt = None, token: TokenOpt = None, home: HomeOpt = None,
          json_out: JsonOpt = False) -> None:
    """Erase one patient: store, quarantine and catalogue; recorded, audited, re-applied by backup restores."""
    from incisive.node.compliance import subjects

    remote = _remote(uploader, central)
    if resume and patient_id is None:
        if remote is not None:
            raise InputError("--resume on a Central Node tenant: post the same erase again (--patient-id ...)")
        done = subjects.resume(_node(home))
        if json_out:
            print_json(done)
            return
        console.print(f"finished {len(done)} interrupted erase(s)" + (f": {', '.join(r['id'] for r in done)}"
                                                                       if done else ""))
        return
    pid = _patient(patient_id)
    if not confirm:
        raise InputError("erasing removes the patient's data from this node for good: add --confirm")
    if remote is not None:
        record = subjects.remote_erase(remote[0], pid, reason, remote[1], _token(token))
    else:
        node = _node(home)
        if resume:
            subjects.resume(node)
        record = subjects.erase(node, pid, reason)
    if json_out:
        print_json(record)
        return
    console.print(f"[green]erased[/] ({record['id']}, state {record['state']})")
    _counts(record)
    for target in (record.get("backups") or {}).get("targets", []):
        console.print(f"backup target {target['name']}: " + ("erasure list written" if target["list"] == "listed"
                                                             else "the erasure list goes with its next run"))


@app.command("ls")
def ls(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Erasures done on this node (and unfinished ones): id, state, when, counts; no identifiers."""
    from incisive.node.compliance import subjects

    rows = subjects.erasures(_node(home))
    if json_out:
        print_json(rows)
        return
    console.print(table("Data-subject erasures", ["id", "state", "started", "completed", "instances", "clinical"],
                        [(r["id"], r["state"], r.get("started_at") or "-", r.get("completed_at") or "-",
                          (r.get("erased") or {}).get("instances", "-"), (r.get("erased") or {}).get("clinical", "-"))
                         for r in rows]))


def access_report(since: Annotated[str, typer.Option("--since", help="From this date (2026-11-01) or time")],
                  home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Who ran what on this node's data since a date, from the audit chain (counts per actor; no PHI); exits 1
    when the chain does not verify."""
    from incisive.node.compliance import access

    data = access.access_report(_node(home), access.parse_since(since))
    chain = data["chain"]
    if json_out:
        print_json(data)
        _exit_if_broken(chain)
        return
    console.print(f"{data['entries']} audit entries since {data['since']}; chain "
                  + ("[green]verified[/]" if chain["ok"] else f"[red]BROKEN ({chain['problems']} problem(s))[/]"))
    for actor in data["actors"]:
        console.print(table(f"{actor['actor']}: {actor['entries']} entries, {actor['not_ok']} not ok",
                            ["action", "count", "outcomes", "targets", "first", "last"],
                            [(r["action"], r["count"], ", ".join(f"{k or '-'}={v}" for k, v in r["outcomes"].items()),
                              r["targets"], r["first"], r["last"]) for r in actor["actions"]]))
    _exit_if_broken(chain)


def _exit_if_broken(chain: dict[str, Any]) -> None:
    if not chain["ok"]:  # the report stands, but the chain it is read from was altered: 'incisive audit verify'
        raise typer.Exit(ExitCode.PROBLEMS)


def register(parent: typer.Typer) -> None:
    """Add ``subject`` and ``access-report`` to ``incisive compliance``."""
    parent.add_typer(app, name="subject")
    parent.command("access-report")(access_report)

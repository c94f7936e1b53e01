"""``incisive central …``: the Central Node operator's commands (logic in :mod:`incisive.central`).

``init``, ``check`` (residency), ``operator-token``, ``tenant add | ls | usage | quota | export | erase`` and
``keys rotate`` live here. Other command modules register theirs on :data:`app` through a ``register(app)``
function: each module named in :data:`EXTRA_MODULES` that is installed is imported and registered at the end of
this module (``central serve`` is in :mod:`incisive.cli.central_serve`; ``central agent`` and
``central tenant enrol`` in :mod:`incisive.cli.central_agent`).

The Central Node directory is ``--central DIR`` (default ``$INCISIVE_CENTRAL``, else the current directory);
``--home`` stays the node directory everywhere (:mod:`incisive.cli.options`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from incisive.central.erase import erase_tenant, pending_erases, resume_erases
from incisive.central.home import Central, create_operator_token
from incisive.central.residency import check_residency
from incisive.central.rotate import rotate_keys
from incisive.central.settings import resolve_central
from incisive.central.tenants import add_tenant, export_tenant, list_tenants, set_quota, usage, verify_export
from incisive.cli.options import JsonOpt
from incisive.common.errors import InputError
from incisive.common.exit_codes import ExitCode
from incisive.common.keyring import PASSPHRASE_ENV, MasterKeyError
from incisive.common.output import console, err_console, human_bytes, print_json, table
from incisive.node.check.render import OUTCOME, STYLE

EXTRA_MODULES = ("incisive.cli.central_serve", "incisive.cli.central_agent", "incisive.cli.central_tenant")
CENTRAL_HELP = "Central Node directory (default: $INCISIVE_CENTRAL or the current directory)"
CentralOpt = Annotated[Path | None, typer.Option("--central", "-C", help=CENTRAL_HELP)]

app = typer.Typer(help="Run the multi-tenant Central Node (operator).", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants: add, list, usage, quotas, export, erase.", no_args_is_help=True)
keys_app = typer.Typer(help="Master key and tenants' data keys.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(keys_app, name="keys")


def open_central(central: Path | None, **kwargs: Any) -> Central:
    return Central.open(resolve_central(central), **kwargs)


@contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A Rich progress bar on stderr, as a ``progress(done, total)`` callback."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=True, disable=not enabled) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Directory to create the Central Node in (new or empty)")],
    country: Annotated[str, typer.Option(help="Hosting country, ISO 3166-1 alpha-2 (e.g. DE)")],
    provider: Annotated[str, typer.Option(help="Hosting provider, e.g. 'Hosting GmbH'")],
    region: Annotated[str, typer.Option(help="Hosting region or data centre, e.g. eu-central")] = "",
    db: Annotated[str, typer.Option("--db", help="Base PostgreSQL URL (one schema per tenant); "
                                                 "default: one SQLite file per tenant")] = "",
    passphrase_env: Annotated[bool, typer.Option(
        "--passphrase-env", help=f"Master key from a passphrase in ${PASSPHRASE_ENV} (scrypt) instead of a "
                                 "random key file")] = False,
    name: Annotated[str, typer.Option(help="Name of this Central Node")] = "central",
    json_out: JsonOpt = False,
) -> None:
    """Create a Central Node (settings, master key, registry, audit) and print the operator token once."""
    passphrase = None
    if passphrase_env:
        passphrase = os.environ.get(PASSPHRASE_ENV)
        if not passphrase:
            raise MasterKeyError(f"--passphrase-env: ${PASSPHRASE_ENV} is not set")
    central = Central.init(directory, country=country, provider=provider, region=region, catalogue_url=db,
                           passphrase=passphrase, name=name)
    token = create_operator_token(central, "operator (central init)")
    info = {"central": str(central.dir), "country": central.settings.country, "provider": central.settings.provider,
            "region": central.settings.region, "master_key": central.settings.master_key.partition(":")[0],
            "catalogue": "postgresql" if db else "sqlite", "operator_token": token}
    if json_out:
        print_json(info)
        return
    console.print(f"[green]initialised Central Node[/] at {info['central']} ({info['country']}, {info['provider']})")
    console.print(f"master key: {central.settings.master_key.partition(':')[2]} — keep a safe copy off this machine; "
                  "without it no tenant's data can be read")
    console.print("operator token (shown once; it lists tenants and usage, it cannot read data):")
    console.print(token, markup=False, highlight=False, soft_wrap=True)


@app.command("operator-token")
def operator_token_cmd(label: Annotated[str, typer.Option(help="Who holds the token")] = "operator",
                       central: CentralOpt = None, json_out: JsonOpt = False) -> None:
    """Create another operator token and print it once."""
    token = create_operator_token(open_central(central), label)
    if json_out:
        print_json({"operator_token": token})
        return
    console.print(token, markup=False, highlight=False, soft_wrap=True)


@app.command("check")
def check_cmd(central: CentralOpt = None, json_out: JsonOpt = False) -> None:
    """Residency: hosting country and backup locations against the EU/EEA (exit 0 pass, 1 warn, 2 fail)."""
    report = check_residency(open_central(central))
    if json_out:
        print_json(report.to_dict())
    else:
        t = Table(title=f"Central Node residency: {report.host}", title_justify="left")
        for column in ("Requirement", "Measured", "Verdict", "How to fix"):
            t.add_column(column, overflow="fold")
        for row in report.rows:
            t.add_row(row.requirement, row.measured, f"[{STYLE[row.verdict]}]{row.verdict.value}[/]", row.fix or "")
        console.print(t)
        console.print(f"exit {report.exit_code} ({OUTCOME[report.exit_code]})", highlight=False)
    raise typer.Exit(report.exit_code)


# --- tenants ----------------------------------------------------------------------------------------------------
@tenant_app.command("add")
def tenant_add(
    name: Annotated[str, typer.Argument(help="The provider's name, e.g. 'Hospital D'")],
    country: Annotated[str, typer.Option(help="The provider's country, ISO 3166-1 alpha-2")],
    contact: Annotated[str, typer.Option(help="Who to contact at the provider, e.g. 'IT lead <it@…>'")],
    tenant_id: Annotated[str | None, typer.Option("--id", help="Tenant id (default: from the name)")] = None,
    quota_bytes: Annotated[int | None, typer.Option(help="Most stored bytes (0 = none; default: central's)")] = None,
    quota_instances: Annotated[int | None, typer.Option(help="Most stored instances (0 = none)")] = None,
    ae_title: Annotated[str | None, typer.Option(help="Called AE title of the tenant (default: from the id)")] = None,
    allowed_ae: Annotated[list[str] | None, typer.Option(help="Calling AE title allowed to send (repeatable)")] = None,
    central: CentralOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add a tenant (node home, key ring, catalogue) and print its manager token once."""
    record, token = add_tenant(open_central(central), name, country, contact, quota_bytes, quota_instances,
                               tenant_id=tenant_id, ae_title=ae_title, allowed_aes=allowed_ae or ())
    if json_out:
        print_json({**record.public(), "manager_token": token})
        return
    console.print(f"[green]added tenant[/] {record.id} ({record.name}), AE title {record.ae_title}")
    console.print("manager token (shown once; give it to the provider over a safe channel):")
    console.print(token, markup=False, highlight=False, soft_wrap=True)


@tenant_app.command("ls")
def tenant_ls(include_erased: Annotated[bool, typer.Option("--all", help="Include erased tenants")] = False,
              central: CentralOpt = None, json_out: JsonOpt = False) -> None:
    """Tenants (id, name, country, state, AE title, quotas) — never their data."""
    rows = list_tenants(open_central(central), include_erased)
    if json_out:
        print_json(rows)
        return
    console.print(table("Tenants", ["id", "name", "country", "state", "AE title", "created", "quota bytes",
                                    "quota instances"],
                        [(r["id"], r["name"], r["country"], r["state"], r["ae_title"], r["created_at"],
                          r["quota_bytes"] or "-", r["quota_instances"] or "-") for r in rows]))


@tenant_app.command("usage")
def tenant_usage(central: CentralOpt = None, json_out: JsonOpt = False) -> None:
    """Per tenant: objects, bytes, last upload, key age (counts only)."""
    rows = usage(open_central(central))
    if json_out:
        print_json(rows)
        return
    console.print(table("Usage", ["tenant", "objects", "bytes", "quarantined", "last upload", "key age (days)",
                                  "quota"],
                        [(r["tenant"], r["objects"], human_bytes(r["bytes"]), r["quarantined"], r["last_upload"],
                          r["key_age_days"], _quota(r)) for r in rows]))


def _quota(row: dict[str, Any]) -> str:
    parts = [human_bytes(row["quota_bytes"])] if row["quota_bytes"] else []
    parts += [f"{row['quota_instances']} instances"] if row["quota_instances"] else []
    return ", ".join(parts) or "-"


@tenant_app.command("quota")
def tenant_quota(tenant: Annotated[str, typer.Argument(help="Tenant id")],
                 quota_bytes: Annotated[int | None, typer.Option(help="Most stored bytes (0 = none)")] = None,
                 quota_instances: Annotated[int | None, typer.Option(help="Most stored instances (0 = none)")] = None,
                 central: CentralOpt = None, json_out: JsonOpt = False) -> None:
    """Change a tenant's quotas (the door refuses uploads past them)."""
    record = set_quota(open_central(central), tenant, quota_bytes, quota_instances)
    if json_out:
        print_json(record.public())
        return
    console.print(f"tenant {record.id}: quota {record.quota_bytes or 'none'} bytes, "
                  f"{record.quota_instances or 'none'} instances")


@tenant_app.command("export")
def tenant_export(
    tenant: Annotated[str | None, typer.Argument(help="Tenant id")] = None,
    to: Annotated[Path | None, typer.Option("--to", help="New directory for the export")] = None,
    verify: Annotated[Path | None, typer.Option("--verify", help="Check an export against its manifest")] = None,
    central: CentralOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The provider's data back (decrypted DICOM, clinical CSV, manifest.json + SHA256SUMS), or --verify one."""
    if verify is not None:
        if tenant is not None or to is not None:
            raise InputError("--verify DIR takes no tenant and no --to")
        result = verify_export(verify)
        if json_out:
            print_json(result)
        else:
            for problem in result["problems"]:
                console.print(f"[red]{problem}[/]", markup=True, highlight=False)
            console.print(f"{result['files']} files: " + ("all match" if result["ok"] else "problems found"))
        raise typer.Exit(ExitCode.OK if result["ok"] else ExitCode.PROBLEMS)
    if tenant is None or to is None:
        raise InputError("name the tenant and --to DIR (or --verify DIR)")
    opened = open_central(central)
    with progress_bar(f"export {tenant}", not json_out) as progress:
        summary = export_tenant(opened, tenant, to, progress)
    if json_out:
        print_json(summary)
        return
    console.print(f"exported {summary['instances']} instances, {summary['quarantined']} quarantined, "
                  f"{summary['clinical_records']} clinical records to {summary['to']} "
                  f"(check: incisive central tenant export --verify {summary['to']}, or sha256sum -c SHA256SUMS)")


@tenant_app.command("erase")
def tenant_erase(
    tenant: Annotated[str, typer.Argument(help="Tenant id")],
    confirm: Annotated[bool, typer.Option("--confirm", help="Yes: destroy the tenant's key and data")] = False,
    request: Annotated[str | None, typer.Option("--request", help="The provider manager's erase request id")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted erase")] = False,
    central: CentralOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Crypto-shred a tenant under its manager's recorded request: key destroyed, then rows and objects removed."""
    opened = open_central(central, resume=False)  # an unfinished erase of this tenant is finished here, below
    with progress_bar(f"erase {tenant}", not json_out) as progress:
        if resume:
            if tenant not in pending_erases(opened):
                raise InputError(f"no unfinished erase of {tenant!r}")
            resume_erases(opened, progress)
            journal = {"tenant": tenant, "resumed": True}
        else:
            if not confirm:
                raise InputError("erasing destroys the tenant's key and data for good: add --confirm")
            if not request:
                raise InputError("--request REF: the id of the erase request the provider's manager filed")
            journal = erase_tenant(opened, tenant, request, progress=progress)
    if json_out:
        print_json(journal)
        return
    console.print(f"tenant {tenant} erased (key destroyed, catalogue and objects removed)")


# --- keys -------------------------------------------------------------------------------------------------------
@keys_app.command("rotate")
def keys_rotate(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant: a new data key for it")] = None,
    re_encrypt: Annotated[bool, typer.Option("--re-encrypt", help="Re-seal every object under a new data key")] = False,
    drop_retired: Annotated[bool, typer.Option("--drop-retired", help="With --re-encrypt: drop the old keys "
                                                                      "(backups made before become unreadable)")]
    = False,
    central: CentralOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-wrap every ring under a new master key (default), or new data keys (--tenant, --re-encrypt)."""
    opened = open_central(central, rotation_ok=True)
    with progress_bar("re-encrypt" if re_encrypt else "re-wrap", not json_out) as progress:
        result = rotate_keys(opened, tenant, re_encrypt, drop_retired, progress)
    if json_out:
        print_json(result)
        return
    if "rewrapped" in result:
        r = result["rewrapped"]
        console.print(f"master key rotated: {r['rewrapped']} rings re-wrapped ({r['already_rewrapped']} already)")
    elif "new_data_key" in result:
        console.print(f"tenant {tenant}: new active data key {result['new_data_key']['active_key']}")
    else:
        for r in result["reencrypted"]:
            state = "complete" if r["complete"] else "incomplete: run it again"
            console.print(f"tenant {r['tenant']}: {r['resealed']} objects re-sealed under {r['active_key']}, "
                          f"{r['swept']} leftovers removed, {state}")


def _register_extras() -> None:
    for module in EXTRA_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(app)


_register_extras()

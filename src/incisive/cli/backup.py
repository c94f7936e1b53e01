"""``incisive backup …``: replicas to a mounted drive, encrypted off-site copies (restic), verify, restore,
retention, schedule and RAID health."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from incisive.cli.options import HomeOpt, JsonOpt
from incisive.common.exit_codes import ExitCode
from incisive.common.output import console, err_console, human_bytes, print_json, table
from incisive.common.settings import resolve_home
from incisive.node.backup import config, ops
from incisive.node.backup.config import Target, parse_location
from incisive.node.backup.keys import read_passphrase
from incisive.node.backup.raid import plan_mirror, raid_health
from incisive.node.backup.restic import Restic
from incisive.node.backup.schedule import Schedule, parse_interval
from incisive.node.home import Node

app = typer.Typer(help="Verified backups: replicas, encrypted off-site copies, restore, retention, RAID.",
                  no_args_is_help=True)
target_app = typer.Typer(help="Backup targets (mounted drives, restic repositories).", no_args_is_help=True)
app.add_typer(target_app, name="target")

TargetArg = Annotated[str | None, typer.Argument(help="Target name (default: the only one)")]
PassFile = Annotated[Path | None, typer.Option(
    help="File whose first line is the key passphrase (else $INCISIVE_BACKUP_PASSPHRASE or a prompt)")]


def _node(home: Path | None) -> Node:
    return Node.open(resolve_home(home))


@contextmanager
def _bar(label: str, enabled: bool) -> Iterator[Callable[[int, int, int, int], None]]:
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[files]} files"),
               DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=True, disable=not enabled) as progress:
        task = progress.add_task(label, total=None, files="0/?")

        def update(files: int, files_total: int, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None, files=f"{files}/{files_total}")

        yield update


@target_app.command("add")
def target_add(
    name: Annotated[str, typer.Argument(help="Short name, e.g. usb or offsite")],
    location: Annotated[str, typer.Argument(help="Mounted directory, or restic:REPOSITORY")],
    encrypt: Annotated[bool, typer.Option(help="Encrypted, deduplicated restic repository")] = False,
    password_file: Annotated[Path | None, typer.Option(help="restic repository password file (kept by the DP)")] = None,
    home: HomeOpt = None,
) -> None:
    """Add a backup target; a restic repository is initialised if it does not exist."""
    node = _node(home)
    target = config.add_target(node.home, name, location, encrypt, password_file)
    if target.kind == "restic":
        try:
            created = Restic(target).ensure_repository()
        except Exception:
            config.remove_target(node.home, name)
            raise
        console.print(f"restic repository {'initialised' if created else 'found'} at {target.location}")
    console.print(f"[green]added[/] {target.name} → {target.label}")


@target_app.command("list")
def target_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Configured targets and policy."""
    cfg = config.load(_node(home).home)
    if json_out:
        print_json(cfg.as_dict())
        return
    console.print(table("Backup targets", ["name", "kind", "location"],
                        [(t.name, t.kind, t.location) for t in cfg.targets]))
    console.print(f"policy: every {cfg.policy.every_days} days, keep last {cfg.policy.keep_last}, "
                  f"monthly {cfg.policy.keep_monthly}")


@target_app.command("remove")
def target_remove(name: str, home: HomeOpt = None) -> None:
    """Forget a target (its backups stay where they are)."""
    config.remove_target(_node(home).home, name)
    console.print(f"removed {name}")


@app.command("run")
def run(
    target: TargetArg = None,
    verify: Annotated[bool, typer.Option("--verify", help="Verify the snapshot afterwards")] = False,
    full: Annotated[bool, typer.Option("--full", help="With --verify: re-hash every object")] = False,
    include_keys: Annotated[bool, typer.Option(help="Add the pseudonym key, passphrase-encrypted")] = False,
    key_passphrase_file: PassFile = None,
    if_older: Annotated[str | None, typer.Option(help="Only run when the last run is older, e.g. 14d")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Back up now: objects the target lacks, a consistent catalogue snapshot, config; manifest last."""
    node = _node(home)
    cfg = config.load(node.home)
    tgt = cfg.get(target)
    if if_older and not ops.due(node.home, tgt, parse_interval(if_older)):
        if json_out:
            print_json({"target": tgt.name, "skipped": "not due"})
        else:
            console.print(f"backup to {tgt.name} is not due yet")
        return
    passphrase = _passphrase(key_passphrase_file, confirm=True) if include_keys else None
    with _bar(f"backup → {tgt.name}", not json_out) as update:
        report, _ = ops.run(node, tgt, passphrase, update)
    result = report.as_dict()
    problems = 0
    if verify:
        with _bar("verifying", not json_out) as update:
            vr = ops.verify(tgt, node.settings.node_id, report.snapshot, full, update, node.home)
        result["verify"] = vr.as_dict()
        problems = len(vr.problems)
    if json_out:
        print_json(result)
    else:
        console.print(f"[green]snapshot {report.snapshot}[/] on {tgt.name}: {report.objects} objects "
                      f"({human_bytes(report.bytes)}), copied {report.copied} ({human_bytes(report.copied_bytes)}), "
                      f"already there {report.skipped}, {report.seconds:.1f} s")
        if report.missing_in_store:
            console.print(f"[yellow]{report.missing_in_store} catalogued objects are missing from the store; "
                          "run 'incisive node fsck'[/]")
        if not report.key_included:
            console.print("pseudonym key not included (keep your offline copy; see docs/backup.md)")
        if verify:
            _print_verify(result["verify"])
    if problems:
        raise typer.Exit(ExitCode.PROBLEMS)


def _passphrase(path: Path | None, confirm: bool) -> str:
    found = read_passphrase(path)
    if found is not None:
        return found
    text: str = typer.prompt("passphrase for the pseudonym key", hide_input=True, confirmation_prompt=confirm)
    return text


@app.command("list")
def list_(target: TargetArg = None, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Snapshots on a target: time, size, objects, verified?"""
    node = _node(home)
    tgt = config.load(node.home).get(target)
    rows = ops.list_snapshots(tgt, node.settings.node_id)
    if json_out:
        print_json(rows)
        return
    console.print(table(f"Snapshots on {tgt.name}", ["id", "time", "objects", "size", "verified"],
                        [(r["id"], r["time"][:19], r["objects"], human_bytes(r["bytes"]),
                          (r.get("verified") or "")[:19]) for r in rows]))


@app.command("verify")
def verify(
    target: TargetArg = None,
    full: Annotated[bool, typer.Option("--full", help="Re-hash every object")] = False,
    snapshot: Annotated[str | None, typer.Option(help="Only this snapshot (default: all)")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check objects, catalogue dumps and config on the target. Exit 1 when anything is wrong."""
    node = _node(home)
    tgt = config.load(node.home).get(target)
    with _bar("verifying", not json_out) as update:
        report = ops.verify(tgt, node.settings.node_id, snapshot, full, update, node.home)
    if json_out:
        print_json(report.as_dict())
    else:
        _print_verify(report.as_dict())
    if not report.ok:
        raise typer.Exit(ExitCode.PROBLEMS)


def _print_verify(data: dict[str, object]) -> None:
    problems = data["problems"]
    assert isinstance(problems, list)
    for p in problems:
        console.print(f"[red]{p['kind']}[/] {p['item']}: {p['detail']} (snapshots: {', '.join(p['snapshots'])})")
    console.print(f"verified {data['objects_checked']} objects in {len(data['snapshots'])} snapshot(s)"  # type: ignore[arg-type]
                  f"{' (full re-hash)' if data['full'] else ''}: " + ("[green]ok[/]" if data["ok"] else
                                                                       f"[red]{len(problems)} problem(s)[/]"))


@app.command("restore")
def restore(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id, unique prefix or 'latest'")],
    to: Annotated[Path, typer.Option("--to", help="New node directory to create")],
    target: Annotated[str | None, typer.Option(help="Configured target name (needs a node)")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Backup location: directory or restic:REPO")] = None,
    node_id: Annotated[str | None, typer.Option(help="Which node's backup, when a location holds several")] = None,
    password_file: Annotated[Path | None, typer.Option(help="restic password file (with --from)")] = None,
    catalogue_url: Annotated[str, typer.Option(help="Catalogue to restore into (PostgreSQL: an empty database)")] = "",
    key_passphrase_file: PassFile = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recreate a working node directory from a snapshot (store bit-identical, catalogue, config)."""
    if from_ is not None:
        kind, where = parse_location(from_, False)
        tgt = Target("from", kind, where, str(password_file.resolve()) if password_file else None)
    else:
        node = _node(home)
        tgt = config.load(node.home).get(target)
        node_id = node_id or node.settings.node_id
    passphrase = read_passphrase(key_passphrase_file)
    with _bar("restoring", not json_out) as update:
        report = ops.restore(tgt, node_id, snapshot, to, catalogue_url, passphrase, update)
    if json_out:
        print_json(report.as_dict())
        return
    console.print(f"[green]restored[/] snapshot {report.snapshot} to {report.home}: {report.objects} objects "
                  f"({human_bytes(report.bytes)}), {report.catalogue} catalogue")
    for warning in report.warnings:
        console.print(f"[yellow]{warning}[/]")
    console.print(f"check it with: incisive node fsck --home {report.home}")


@app.command("prune")
def prune(
    target: TargetArg = None,
    keep_last: Annotated[int | None, typer.Option(min=0, help="Keep the newest N (default: policy)")] = None,
    keep_monthly: Annotated[int | None, typer.Option(min=0, help="Keep one per month for M months")] = None,
    dry_run: Annotated[bool, typer.Option(help="Only show what would go")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove old snapshots and the objects no remaining snapshot references."""
    node = _node(home)
    cfg = config.load(node.home)
    tgt = cfg.get(target)
    result = ops.prune(tgt, node.settings.node_id, cfg.policy.keep_last if keep_last is None else keep_last,
                       cfg.policy.keep_monthly if keep_monthly is None else keep_monthly, dry_run)
    if json_out:
        print_json(result)
        return
    verb = "would remove" if dry_run else "removed"
    console.print(f"kept {len(result['kept'])} snapshot(s), {verb} {len(result['removed'])}"
                  + (f" and {result['objects_removed']} unreferenced objects ({human_bytes(result['bytes_freed'])})"
                     if "objects_removed" in result else ""))


@app.command("schedule")
def schedule(
    target: TargetArg = None,
    every: Annotated[str, typer.Option(help="Interval, e.g. 14d or 2w")] = "14d",
    cron: Annotated[bool, typer.Option("--cron", help="A crontab line instead of systemd units")] = False,
    write_to: Annotated[Path | None, typer.Option(help="Folder for the files (default: <node>/backup/schedule)")] = (
        None),
    user: Annotated[str | None, typer.Option(help="Run the service as this user")] = None,
    home: HomeOpt = None,
) -> None:
    """Write a systemd timer + service (or a cron line), show it, and set the policy interval."""
    node = _node(home)
    cfg = config.load(node.home)
    if target is not None:
        cfg.get(target)
    cfg.policy.every_days = parse_interval(every)
    config.save(node.home, cfg)
    sched = Schedule(node.home, cfg.policy.every_days, target, user)
    paths = sched.write(write_to or node.home / "backup" / "schedule", cron)
    for path in paths:
        typer.echo(f"# {path}")
        typer.echo(path.read_text())
    typer.echo(sched.install_hint(paths, cron))


@app.command("raid")
def raid(
    plan: Annotated[list[str] | None, typer.Option("--plan", help="Two empty disks to mirror (repeat)")] = None,
    json_out: JsonOpt = False,
) -> None:
    """RAID / ZFS health (degraded, rebuilding, failed members); --plan prints mdadm commands for empty disks."""
    if plan:
        commands = plan_mirror(plan)
        if json_out:
            print_json({"commands": commands})
        else:
            typer.echo("\n".join(commands))
        return
    data = raid_health()
    if json_out:
        print_json(data)
        return
    rows = [(a["name"], a["level"], f"{a['working']}/{a['devices']}", a["health"], ", ".join(a["failed_members"]))
            for a in data["md"]] + [(p["pool"], "zfs", "", p["health"], "") for p in data["zfs"]]
    console.print(table("Redundancy", ["array", "level", "working", "health", "failed"], rows)
                  if rows else "no software RAID or ZFS pool found")
    for alert in data["alerts"]:
        console.print(f"[yellow]warning:[/] {alert}")


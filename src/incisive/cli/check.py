"""``incisive node check``: is this machine ready to be a node? Exit 0 all pass, 1 warnings, 2 failures.

The JSON report (``--json``) follows the schema in docs/readiness.md."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from incisive.cli.options import PLATFORM_URL_ENV, JsonOpt
from incisive.common.output import console, err_console, print_json
from incisive.node.check.profiles import DEFAULT_PROFILE, PROFILES, CheckContext, get_profile, last_verified_backup_age
from incisive.node.check.render import print_report, report_format, write_document
from incisive.node.check.runner import run_check
from incisive.node.check.system import LiveSystem

NODE_HOME_ENV = "INCISIVE_NODE"
DEFAULT_STORE = "/var/lib/incisive"


def default_store() -> str:
    """The node directory from ``$INCISIVE_NODE``, else the conventional /var/lib/incisive."""
    return os.environ.get(NODE_HOME_ENV) or DEFAULT_STORE


def check(
    profile: Annotated[str, typer.Option(
        "--profile", "-p", help=f"Requirements to check against: {', '.join(PROFILES)}")] = DEFAULT_PROFILE,
    json_out: JsonOpt = False,
    only: Annotated[str | None, typer.Option(
        "--only",
        help="Comma-separated areas: cpu,memory,storage,gpu,os,network,access,runtime,sandbox,redundancy,manual",
    )] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Also write the report to this .html or .md file (to attach to a support request)",
    )] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="Directory of the node store (default: $INCISIVE_NODE or /var/lib/incisive)")] = None,
    integration_user: Annotated[str, typer.Option(
        "--integration-user", help="Account the integrator logs in with")] = "incisive",
    platform_url: Annotated[str | None, typer.Option(
        "--platform-url", help=f"Platform URL to test reachability (default: ${PLATFORM_URL_ENV})")] = None,
) -> None:
    """Check this machine against the node specification; exit 0 all pass, 1 warnings only, 2 failures."""
    chosen = get_profile(profile)
    if report is not None:
        report_format(report)  # a bad file name fails before the check runs
    store_path = os.path.abspath(os.path.expanduser(store or default_store()))
    ctx = CheckContext(store_path=store_path, integration_user=integration_user,
                       platform_url=platform_url or os.environ.get(PLATFORM_URL_ENV) or None,
                       backup_age=lambda: last_verified_backup_age(store_path))
    result = run_check(LiveSystem(), chosen, ctx, only)
    if report is not None:
        write_document(result, report)
    if json_out:
        print_json(result.to_dict())
    else:
        print_report(result, console)
        if report is not None:
            console.print(f"report written to {report}")
    if report is not None and json_out:
        err_console.print(f"report written to {report}")
    raise typer.Exit(result.exit_code)

"""The options every command group shares, each defined once, with one help text.

``--home`` is the node directory everywhere except under ``incisive platform``, where it is the platform
directory (a different default and environment variable, so a different help text). ``--platform`` is the
platform URL everywhere except ``incisive audit``, where the audited log lives in a platform *directory*.
``--token`` is the caller's platform API token everywhere except ``incisive node enrol``, where it is the
node's one-time invite. ``tests/test_cli_package.py`` walks the command tree and fails on any other spelling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PLATFORM_URL_ENV = "INCISIVE_PLATFORM_URL"
TOKEN_ENV = "INCISIVE_TOKEN"  # noqa: S105 - a variable name

HOME_HELP = "Node directory (default: $INCISIVE_NODE or the current directory)"
PLATFORM_HOME_HELP = "Platform directory (default: $INCISIVE_PLATFORM or the current directory)"
JSON_HELP = "Print JSON instead of tables"
PLATFORM_HELP = f"The platform's URL (default: ${PLATFORM_URL_ENV}); for fl/model/infer it means platform mode"
TOKEN_HELP = f"Your platform API token (default: ${TOKEN_ENV})"
LOCAL_HELP = f"Local mode: this machine's workspace and node directories, even if ${PLATFORM_URL_ENV} is set"
WORKSPACE_HELP = "Local mode: registry + jobs directory (default: $INCISIVE_FL_HOME)"
AUDIT_PLATFORM_HELP = "Platform directory whose audit log to read"
AUDIT_NODE_HELP = "Node directory whose audit log to read"
INVITE_TOKEN_HELP = "One-time invite token from 'incisive platform node invite'"  # noqa: S105 - help text
UPLOAD_TOKEN_ENV = "INCISIVE_UPLOAD_TOKEN"  # noqa: S105 - a variable name
UPLOAD_TOKEN_HELP = f"Your Central Node tenant's uploader token (default: ${UPLOAD_TOKEN_ENV})"
TENANT_TOKEN_ENV = "INCISIVE_TENANT_TOKEN"  # noqa: S105 - a variable name
TENANT_TOKEN_HELP = f"Your Central Node tenant's manager token (default: ${TENANT_TOKEN_ENV})"

HomeOpt = Annotated[Path | None, typer.Option("--home", "-H", help=HOME_HELP)]
PlatformHomeOpt = Annotated[Path | None, typer.Option("--home", "-H", help=PLATFORM_HOME_HELP)]
JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
PlatformOpt = Annotated[str | None, typer.Option("--platform", envvar=PLATFORM_URL_ENV, help=PLATFORM_HELP)]
TokenOpt = Annotated[str, typer.Option("--token", envvar=TOKEN_ENV, help=TOKEN_HELP, show_default=False)]
LocalOpt = Annotated[bool, typer.Option("--local", help=LOCAL_HELP)]
WorkspaceOpt = Annotated[Path | None, typer.Option("--workspace", "-w", help=WORKSPACE_HELP)]
# `incisive query` has always said --url; --platform is the shared spelling, --url stays as its alias
QueryPlatformOpt = Annotated[str, typer.Option("--platform", "--url", envvar=PLATFORM_URL_ENV, help=PLATFORM_HELP)]
AuditPlatformOpt = Annotated[Path | None, typer.Option("--platform", help=AUDIT_PLATFORM_HELP)]
AuditNodeOpt = Annotated[Path | None, typer.Option("--node", help=AUDIT_NODE_HELP)]
InviteTokenOpt = Annotated[str, typer.Option("--token", help=INVITE_TOKEN_HELP)]

# the one help text each shared option may have, by option name (the test checks the whole tree against it)
SHARED_HELP: dict[str, frozenset[str]] = {
    "--home": frozenset({HOME_HELP, PLATFORM_HOME_HELP}),
    "--json": frozenset({JSON_HELP}),
    "--platform": frozenset({PLATFORM_HELP, AUDIT_PLATFORM_HELP}),
    "--token": frozenset({TOKEN_HELP, INVITE_TOKEN_HELP, UPLOAD_TOKEN_HELP, TENANT_TOKEN_HELP}),
    "--local": frozenset({LOCAL_HELP}),
    "--workspace": frozenset({WORKSPACE_HELP}),
}

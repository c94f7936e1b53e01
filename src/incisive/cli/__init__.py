"""The ``incisive`` command: one sub-command group per role (node, backup, platform, fl, …), one module per group.

Layout: :mod:`.node` (with :mod:`.check`, :mod:`.token`, :mod:`.serve`, :mod:`.status`, :mod:`.agent`,
:mod:`.policy`), :mod:`.backup`, :mod:`.platform`, :mod:`.query`, :mod:`.audit`, :mod:`.fl`, :mod:`.model`,
:mod:`.infer` (platform-mode output in :mod:`.fl_output`, local vs platform mode in :mod:`.mode`) and
:mod:`.demo`. Options shared by several groups (``--home``, ``--json``, ``--platform``, ``--token``, ``--local``,
``--workspace``) are defined once in :mod:`.options`. Only these modules import typer; the logic they call does not.

Groups are imported lazily: ``incisive node stats`` loads the node code only, not PyTorch, Flower or the
platform service, so start-up stays short. ``incisive --help`` lists every group from the table below
without importing any of them. Importing ``app`` from this module (tests do) builds the complete CLI.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer

from incisive import __version__
from incisive.common.errors import IncisiveError
from incisive.common.output import err_console

# name: (module, attribute, is a group, one-line help shown by `incisive --help`)
COMMANDS: dict[str, tuple[str, str, bool, str]] = {
    "node": ("incisive.cli.node", "app", True, "Run and manage a federated node."),
    "backup": ("incisive.cli.backup", "app", True, "Replicas, verification, restore, RAID health."),
    "platform": ("incisive.cli.platform", "app", True, "Run and administer the central platform."),
    "query": ("incisive.cli.query", "app", True, "Federated aggregate queries (researchers)."),
    "audit": ("incisive.cli.audit", "app", True, "Verify and export hash-chained audit logs."),
    "fl": ("incisive.cli.fl", "app", True, "Federated training and evaluation on Flower."),
    "model": ("incisive.cli.model", "app", True, "Model bundles and the model registry."),
    "infer": ("incisive.cli.infer", "infer", False, "Run an approved model at a node."),
    "central": ("incisive.cli.central", "app", True, "Run the multi-tenant Central Node (operator)."),
    "upload": ("incisive.cli.upload", "app", True, "Pseudonymise at the hospital and upload to a Central Node."),
    "compliance": ("incisive.cli.compliance", "app", True, "GDPR records: RoPA, processors, residency, breaches, "
                   "data-subject requests."),
    "demo-data": ("incisive.cli.demo", "demo_data", False, "Generate a synthetic cohort with fake PHI."),
}


def _version() -> None:
    """Print the software version."""
    typer.echo(__version__)


def build_app(only: str | None = None, load_all: bool = False) -> typer.Typer:
    """The CLI with every group loaded (``load_all``), or only ``only`` loaded and the rest as help stubs."""
    root = typer.Typer(
        name="incisive",
        help="Federated repository node for pseudonymised cancer-imaging and clinical data.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    for name, (module, attribute, is_group, summary) in COMMANDS.items():
        if load_all or name == only:
            target: Any = getattr(importlib.import_module(module), attribute)
            if is_group:
                root.add_typer(target, name=name)
            else:
                root.command(name)(target)
        elif is_group:
            root.add_typer(typer.Typer(help=summary), name=name)
        else:
            root.command(name, help=summary, context_settings={"ignore_unknown_options": True})(_stub)
    root.command("version")(_version)
    return root


def _stub() -> None:  # pragma: no cover - only shown in --help; main() loads the real command
    raise RuntimeError("command not loaded")


def __getattr__(name: str) -> Any:
    if name == "app":
        return build_app(load_all=True)
    raise AttributeError(name)


def _selected(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def main() -> None:
    # Everything a command creates (node/platform directories, catalogue and its -wal/-shm, logs, audit, state,
    # keys, exports) is private to the service account: directories 0700, files 0600 (issue 16 item 6).
    os.umask(0o077)
    try:
        build_app(only=_selected(sys.argv[1:]))()
    except IncisiveError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)

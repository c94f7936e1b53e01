"""``incisive node install-services`` and ``incisive platform install-services``: systemd units for the
long-running services (:mod:`incisive.node.services`, :mod:`incisive.platform.services_units`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from incisive.cli.options import HomeOpt, JsonOpt, PlatformHomeOpt
from incisive.common.output import console, print_json
from incisive.common.settings import resolve_home
from incisive.common.systemd import DEFAULT_USER, Installed

WriteToOpt = Annotated[Path | None, typer.Option(
    help="Write the units (and the sysusers.d file) into this folder for review instead of installing them")]
UserOpt = Annotated[str, typer.Option(help="Dedicated unprivileged user the services run as (created if missing)")]


def _report(done: Installed, json_out: bool) -> None:
    if json_out:
        print_json({"unit_dir": str(done.unit_dir), "files": [str(p) for p in done.files], "enabled": done.enabled,
                    "notes": done.notes})
        return
    for path in done.files:
        console.print(f"  {path}")
    for note in done.notes:
        console.print(note)


def node_install_services(
    write_to: WriteToOpt = None,
    user: UserOpt = DEFAULT_USER,
    gpu: Annotated[bool, typer.Option("--gpu", help="Let the agent's unit use the GPU (/dev/nvidia*)")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """systemd units for node serve, node agent and the backup timer; without --write-to installs them into
    /etc/systemd/system and enables them (needs root)."""
    from incisive.node.home import Node
    from incisive.node.services import install

    node = Node.open(resolve_home(home), check_schema=False)
    if write_to is None and not json_out:
        console.print("installing into /etc/systemd/system (needs root; --write-to DIR only writes them)")
    _report(install(node, user, write_to, gpu=gpu), json_out)


def platform_install_services(
    write_to: WriteToOpt = None,
    user: UserOpt = DEFAULT_USER,
    home: PlatformHomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A systemd unit for platform serve; without --write-to installs it into /etc/systemd/system and enables it
    (needs root)."""
    from incisive.platform.home import Platform
    from incisive.platform.services_units import install
    from incisive.platform.settings import resolve_platform_home

    platform = Platform.open(resolve_platform_home(home), check_schema=False)
    if write_to is None and not json_out:
        console.print("installing into /etc/systemd/system (needs root; --write-to DIR only writes them)")
    _report(install(platform, user, write_to), json_out)

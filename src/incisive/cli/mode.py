"""Local or platform mode for ``incisive fl | model | infer``, chosen by the user, never guessed.

* **Platform mode**: ``--platform URL`` (or ``$INCISIVE_PLATFORM_URL``). The platform's registry and SuperLink run
  the job; nodes are named by id (``fl --nodes a,b``, ``infer --node-id ID``).
* **Local mode**: ``--local``, or no platform URL at all. This machine's workspace (``--workspace``) and node
  directories (``fl --node NAME=DIR``, ``infer --node DIR``).

A local-only option together with ``--platform`` on the command line, or ``--local`` with ``--platform``, is
refused (exit 2). Two old spellings still work, with a deprecation note on stderr, because what they mean is
clear: a local-only option while only ``$INCISIVE_PLATFORM_URL`` is set (local mode, as before: say ``--local``),
and ``infer --node ID`` in platform mode where ID is not a directory (say ``--node-id``).
"""

from __future__ import annotations

import click
import typer

from incisive.common.errors import InputError
from incisive.common.output import err_console
from incisive.federated.remote import Platform


def deprecated(message: str) -> None:
    err_console.print(f"[yellow]deprecated:[/] {message}", highlight=False)


def from_command_line(ctx: typer.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE


def choose(ctx: typer.Context, platform: str | None, token: str, local: bool,
           local_options: dict[str, object]) -> Platform | None:
    """The platform client in platform mode, ``None`` in local mode. ``local_options``: the local-only options
    given (name → value; unset ones are ``None``/empty)."""
    given = [name for name, value in local_options.items() if value]
    if local:
        if platform and from_command_line(ctx, "platform"):
            raise InputError("give --local or --platform, not both")
        return None
    if not platform:
        return None
    if given:
        if from_command_line(ctx, "platform"):
            what = "is a local-mode option" if len(given) == 1 else "are local-mode options"
            raise InputError(f"{', '.join(given)} {what}; drop it for platform mode, or use --local")
        deprecated(f"$INCISIVE_PLATFORM_URL is set but {', '.join(given)} asks for local mode: running locally; "
                   "add --local to say so (this inference will go)")
        return None
    return Platform(platform, token)


def require_local(api: Platform | None, platform_only: dict[str, object]) -> None:
    """Refuse platform-mode options in local mode (they used to be ignored silently)."""
    given = [name for name, value in platform_only.items() if value]
    if api is None and given:
        raise InputError(f"{', '.join(given)} only applies in platform mode (--platform URL)")

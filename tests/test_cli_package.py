"""The CLI package's shape: shared options come from ``incisive.cli.options`` everywhere, typer lives only in
``incisive.cli``, node commands stay light (no PyTorch, Flower or platform import), and fl/model/infer choose local
or platform mode from what the user said, never from what exists on disk."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import click
import pytest
import typer
from typer.testing import CliRunner

from incisive.cli import COMMANDS, app, build_app
from incisive.cli import mode as mode_mod
from incisive.cli.options import SHARED_HELP
from incisive.common.errors import InputError

SRC = Path(__file__).resolve().parents[1] / "src" / "incisive"
runner = CliRunner()


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, (*path, name))


def tree() -> list[tuple[tuple[str, ...], click.Command]]:
    return list(walk(typer.main.get_command(app)))


def test_every_shared_option_has_its_one_help_text() -> None:
    seen: dict[str, int] = {}
    for path, command in tree():
        for param in command.params:
            for name in param.opts:
                if name in SHARED_HELP:
                    seen[name] = seen.get(name, 0) + 1
                    assert getattr(param, "help", None) in SHARED_HELP[name], (" ".join(path), name, param)
    # the tree really has them: every node and backup command with a node takes --home, and so on
    assert seen["--home"] >= 30 and seen["--json"] >= 30 and seen["--platform"] >= 8 and seen["--token"] >= 8


def test_home_is_the_platform_directory_only_under_platform() -> None:
    from incisive.cli.options import HOME_HELP, PLATFORM_HOME_HELP

    for path, command in tree():
        for param in command.params:
            if "--home" in param.opts:
                expected = PLATFORM_HOME_HELP if path[0] == "platform" else HOME_HELP
                assert getattr(param, "help", None) == expected, path
                assert "-H" in param.opts, path


def test_typer_only_in_the_cli_package() -> None:
    offenders = []
    for file in SRC.rglob("*.py"):
        if SRC / "cli" in file.parents:
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "typer" or n.startswith("typer.") for n in names):
                offenders.append(str(file.relative_to(SRC)))
    assert offenders == []


def test_help_stubs_match_the_loaded_groups() -> None:
    """``incisive --help`` lists every group without loading it; each loads to a group of the same name."""
    stub = typer.main.get_command(build_app())
    full = typer.main.get_command(app)
    assert isinstance(stub, click.Group) and isinstance(full, click.Group)
    assert set(stub.commands) == set(full.commands) == {*COMMANDS, "version"}


LIGHT = """
import sys
sys.argv = ["incisive", *sys.argv[1:]]
from incisive.cli import main
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "flwr", "incisive.platform", "incisive.federated.service", "monai")
               if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["node", "stats"], ["--help"], ["node", "--help"], ["node", "stats", "--help"],
                                  ["node", "policy", "--help"], ["backup", "--help"]])
def test_node_commands_stay_light(tmp_path: Path, args: list[str]) -> None:
    argv = [*args, "--home", str(tmp_path / "none")] if args == ["node", "stats"] else args
    done = subprocess.run([sys.executable, "-c", LIGHT, *argv], capture_output=True, text=True, timeout=120,
                          check=False)
    assert "HEAVY=\n" in done.stderr, done.stderr


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "incisive", "version"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and done.stdout.strip()


def refused(result: Any, text: str) -> None:
    """Refused as bad input: exit 2 from the real entry point (InputError), with ``text`` in the message."""
    assert isinstance(result.exception, InputError), result.output
    assert InputError.exit_code == 2 and text in str(result.exception)


class FakePlatform:
    calls: ClassVar[list[tuple[str, Any]]] = []

    def __init__(self, url: str, token: str) -> None:
        self.calls.append(("open", url))

    def models(self) -> list[dict[str, Any]]:
        self.calls.append(("models", None))
        return []

    def infer(self, model: str, node: str, series: Any, project: Any) -> dict[str, Any]:
        self.calls.append(("infer", node))
        return {"id": "r1"}


@pytest.fixture
def fake_platform(monkeypatch: pytest.MonkeyPatch) -> type[FakePlatform]:
    FakePlatform.calls = []
    monkeypatch.setattr(mode_mod, "Platform", FakePlatform)
    monkeypatch.delenv("INCISIVE_PLATFORM_URL", raising=False)
    return FakePlatform


def test_mode_is_explicit(tmp_path: Path, fake_platform: type[FakePlatform], monkeypatch: pytest.MonkeyPatch) -> None:
    ws = ["--workspace", str(tmp_path / "ws")]
    r = runner.invoke(app, ["model", "list", "--platform", "http://p", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == [] and fake_platform.calls[-1] == ("models", None)
    r = runner.invoke(app, ["model", "list", "--json", *ws])
    assert r.exit_code == 0 and json.loads(r.stdout) == [] and len(fake_platform.calls) == 2  # local: no platform
    for args in (["--platform", "http://p", *ws], ["--platform", "http://p", "--local"]):
        r = runner.invoke(app, ["model", "list", *args])
        refused(r, "local")
    monkeypatch.setenv("INCISIVE_PLATFORM_URL", "http://p")
    r = runner.invoke(app, ["model", "list", "--json", *ws])  # old spelling: local, with a note on stderr
    assert r.exit_code == 0 and json.loads(r.stdout) == [] and "deprecated" in r.stderr and "--local" in r.stderr
    calls = len(fake_platform.calls)
    r = runner.invoke(app, ["model", "list", "--json", "--local"])
    assert r.exit_code == 0 and r.stderr == "" and len(fake_platform.calls) == calls
    r = runner.invoke(app, ["model", "list", "--json"])
    assert r.exit_code == 0 and fake_platform.calls[-1] == ("models", None)


def test_infer_node_dir_and_node_id(tmp_path: Path, fake_platform: type[FakePlatform],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from incisive.cli import fl_output

    monkeypatch.setattr(fl_output, "wait_inference", lambda api, rid, node, timeout, j: {"status": "completed",
                                                                                         "node": node})
    monkeypatch.setattr(fl_output, "print_inference", lambda done, j: None)
    base = ["infer", "--model", "m:1@job", "--platform", "http://p"]
    r = runner.invoke(app, [*base, "--node-id", "hospital-a"])
    assert r.exit_code == 0, r.output
    assert fake_platform.calls[-1] == ("infer", "hospital-a") and "deprecated" not in r.stderr
    r = runner.invoke(app, [*base, "--node", "hospital-b"])  # old spelling, not a directory: a node id
    assert r.exit_code == 0 and fake_platform.calls[-1] == ("infer", "hospital-b")
    assert "deprecated" in r.stderr and "--node-id" in r.stderr
    r = runner.invoke(app, [*base, "--node", str(tmp_path)])  # a directory with --platform: which one? refused
    refused(r, "local-mode")
    r = runner.invoke(app, [*base])
    refused(r, "--node-id")
    r = runner.invoke(app, ["infer", "--model", "m:1@job", "--node-id", "hospital-a"])  # no platform
    refused(r, "platform mode")

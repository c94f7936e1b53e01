"""One exit-code table: every code distinct and documented, and no command in src exits with a bare number."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import incisive
from incisive.common.errors import ConfigError, IncisiveError, InputError
from incisive.common.exit_codes import ExitCode

SRC = Path(incisive.__file__).parent
README = SRC.parents[1] / "README.md"
EXITS = {"exit", "Exit", "SystemExit", "_exit"}  # sys.exit, typer.Exit, raise SystemExit, os._exit


def test_codes_are_distinct_and_each_has_its_meaning() -> None:
    assert len(ExitCode.__members__) == len(list(ExitCode)) == len({int(c) for c in ExitCode})  # no aliases
    assert ExitCode.OK == 0 and all(0 <= c < 126 for c in ExitCode)  # 126+ are the shell's
    docs = [c.__doc__ for c in ExitCode]
    assert all(doc and doc != ExitCode.__doc__ for doc in docs) and len(set(docs)) == len(docs)


def test_five_means_one_thing() -> None:
    from incisive.federated.deploy import FlowerError
    from incisive.node.agent import AgentRevoked

    assert AgentRevoked.exit_code == ExitCode.AGENT_REVOKED == 5
    assert FlowerError.exit_code == ExitCode.FLOWER_FAILED != 5
    assert ConfigError.exit_code == InputError.exit_code == ExitCode.INVALID
    assert IncisiveError.exit_code == ExitCode.PROBLEMS


def _literal(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool)


def _bare_exits(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            args = [*node.args[:1], *(k.value for k in node.keywords if k.arg in ("code", "status"))]
            if name in EXITS and any(_literal(a) for a in args):
                lines.append(node.lineno)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "exit_code" for t in targets) and _literal(node.value):
                lines.append(node.lineno)
    return lines


def test_the_scan_finds_bare_numbers() -> None:
    sample = ("import sys, typer\nsys.exit(3)\nraise typer.Exit(1)\nraise typer.Exit(code=2)\n"
              "class E:\n    exit_code = 5\nsys.exit(ExitCode.OK)\nraise typer.Exit(report.exit_code)\n")
    assert _bare_exits(ast.parse(sample)) == [2, 3, 4, 6]


def test_every_exit_in_src_uses_the_table() -> None:
    offenders = [f"{path.relative_to(SRC)}:{line}" for path in sorted(SRC.rglob("*.py"))
                 for line in _bare_exits(ast.parse(path.read_text(encoding="utf-8"), str(path)))]
    assert offenders == [], "use incisive.common.exit_codes.ExitCode, not a number: " + ", ".join(offenders)


def test_readme_lists_every_error_code() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    line = re.search(r"Errors are one line on stderr with a non-zero exit code \((.*?)\)\s+and never", text)
    assert line, "README's error line moved"
    listed = {int(n) for n in re.findall(r"(?:^|, )(\d+) ", line.group(1))}
    assert listed == {int(c) for c in ExitCode if c != ExitCode.OK}

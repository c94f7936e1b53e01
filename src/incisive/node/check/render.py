"""Render a report: a Rich table for the terminal, JSON, or an HTML/Markdown file to attach to a ticket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from rich.console import Console
from rich.table import Table

from incisive.common.errors import InputError
from incisive.node.check.model import AREA_TITLES, Report, Verdict
from incisive.node.check.profiles import PROFILES

STYLE = {Verdict.PASS: "green", Verdict.WARN: "yellow", Verdict.FAIL: "bold red", Verdict.UNKNOWN: "magenta",
         Verdict.MANUAL: "cyan"}
OUTCOME = {0: "all checks pass", 1: "warnings only", 2: "failures found"}
SCHEMA_PATH = Path(__file__).with_name("schema") / "check-report.schema.json"


def load_schema() -> dict[str, Any]:
    """The published JSON schema of ``incisive node check --json``."""
    data: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return data


def rich_table(report: Report) -> Table:
    table = Table(title=f"Node readiness: {report.host} vs {report.profile}", title_justify="left",
                  show_lines=False, expand=False)
    for column in ("Area", "Requirement", "Measured", "Verdict", "How to fix"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        table.add_row(AREA_TITLES[row.area], row.requirement, row.measured,
                      f"[{STYLE[row.verdict]}]{row.verdict.value}[/]", row.fix or "")
    return table


def print_report(report: Report, console: Console) -> None:
    console.print(rich_table(report))
    counts = report.counts()
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    console.print(f"{summary} in {report.duration_s:.1f} s → exit {report.exit_code} "
                  f"({OUTCOME[report.exit_code]})", highlight=False)


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("incisive.node.check", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_document(report: Report, fmt: str) -> str:
    """The report as ``html`` or ``md``."""
    if fmt not in ("html", "md"):
        raise InputError(f"unknown report format {fmt!r}: use .html or .md")
    template = _environment().get_template(f"report.{fmt}.j2")
    return template.render(
        report=report, rows=report.rows, counts=report.counts(), titles=AREA_TITLES,
        outcome=OUTCOME[report.exit_code], profile=PROFILES.get(report.profile),
        md=_md_cell,
    )


def _md_cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def report_format(path: Path) -> str:
    """``html`` or ``md`` from the file name; :class:`InputError` for anything else."""
    fmt = {"htm": "html", "html": "html", "md": "md", "markdown": "md"}.get(path.suffix.lower().lstrip("."))
    if fmt is None:
        raise InputError(f"--report must end in .html or .md, not {path.name!r}")
    return fmt


def write_document(report: Report, path: Path) -> Path:
    path.write_text(render_document(report, report_format(path)), encoding="utf-8")
    return path

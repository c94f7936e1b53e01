"""Plain data of a readiness check: verdicts, rows, the report and its exit code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from incisive.common.exit_codes import ExitCode

AREAS: tuple[str, ...] = (
    "cpu", "memory", "storage", "gpu", "os", "network", "access", "runtime", "sandbox", "redundancy", "manual",
)
AREA_TITLES: dict[str, str] = {
    "cpu": "CPU", "memory": "RAM", "storage": "Storage", "gpu": "GPU", "os": "OS", "network": "Network",
    "access": "Access", "runtime": "Runtime", "sandbox": "Bundle sandbox",
    "redundancy": "Redundancy & backup", "manual": "Power & placement",
}
ALIASES: dict[str, str] = {
    "ram": "memory", "mem": "memory", "disk": "storage", "disks": "storage", "backup": "redundancy",
    "raid": "redundancy", "net": "network", "ssh": "access", "docker": "runtime", "power": "manual",
    "placement": "manual", "bwrap": "sandbox",
}
SCHEMA_ID = "https://incisive.example/schemas/node-check-report/1.json"
REPORT_FORMAT = "incisive-node-check/1"

Facts = dict[str, Any]
"""What a collector measured: JSON-like values; ``errors`` maps a fact to why it could not be read."""


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"
    MANUAL = "manual"


@dataclass(frozen=True)
class Row:
    """One line of the report; ``fix`` is a one-line remedy, required for every non-pass verdict."""

    id: str
    area: str
    requirement: str
    measured: str
    verdict: Verdict
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.verdict is not Verdict.PASS and not self.fix:
            raise ValueError(f"row {self.id}: a {self.verdict} row needs a fix")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data


def exit_code(rows: list[Row]) -> ExitCode:
    """0 = all pass, 1 = warnings only (``unknown`` counts as a warning), 2 = at least one failure.

    ``manual`` rows never change the exit code: a machine cannot measure them.
    """
    verdicts = {row.verdict for row in rows}
    if Verdict.FAIL in verdicts:
        return ExitCode.INVALID
    if verdicts & {Verdict.WARN, Verdict.UNKNOWN}:
        return ExitCode.PROBLEMS
    return ExitCode.OK


@dataclass
class Report:
    profile: str
    host: str
    generated_at: str
    tool_version: str
    duration_s: float
    areas: list[str]
    rows: list[Row] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return int(exit_code(self.rows))  # a plain number in reports and on the wire

    def counts(self) -> dict[str, int]:
        return {v.value: sum(1 for r in self.rows if r.verdict is v) for v in Verdict}

    def to_dict(self) -> dict[str, Any]:
        return {
            "$schema": SCHEMA_ID,
            "format": REPORT_FORMAT,
            "profile": self.profile,
            "host": self.host,
            "generated_at": self.generated_at,
            "tool_version": self.tool_version,
            "duration_s": round(self.duration_s, 3),
            "areas": list(self.areas),
            "summary": {**self.counts(), "exit_code": self.exit_code},
            "rows": [row.to_dict() for row in self.rows],
        }


def gb(n_bytes: float) -> float:
    """Decimal gigabytes, as the specification and vendors count them."""
    return n_bytes / 1e9


def fmt_bytes(n_bytes: float) -> str:
    if n_bytes >= 1e12:
        return f"{n_bytes / 1e12:.2f} TB"
    return f"{n_bytes / 1e9:.0f} GB"

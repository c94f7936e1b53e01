"""Replay recorded machines (tests/node/check/fixtures/<host>/) through the readiness check."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from incisive.node.check import CheckContext, RecordedSystem, Report, get_profile, run_check

FIXTURES = Path(__file__).parent / "fixtures"
TODAY = date(2026, 6, 1)
HOSTS = ("workstation", "vm", "laptop", "windows", "server-nogpu")
STORES = {"workstation": "/srv/incisive/node", "vm": "/data/incisive", "server-nogpu": "/data/incisive"}


def recorded(host: str) -> RecordedSystem:
    return RecordedSystem(FIXTURES / host)


def context(host: str, **overrides: Any) -> CheckContext:
    values: dict[str, Any] = {"store_path": STORES.get(host, "/var/lib/incisive"), "today": TODAY}
    values.update(overrides)
    return CheckContext(**values)


def check_host(host: str, profile: str = "node-spec-1.1", only: str | None = None, **overrides: Any) -> Report:
    return run_check(recorded(host), get_profile(profile), context(host, **overrides), only)


@pytest.fixture
def run_host() -> Callable[..., Report]:
    return check_host


def verdicts(report: Report) -> dict[str, str]:
    return {row.id: row.verdict.value for row in report.rows}

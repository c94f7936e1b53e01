"""Run the collectors (concurrently, each isolated) and the rules, and assemble the report."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from incisive import __version__
from incisive.common.errors import InputError
from incisive.node.check.collectors import COLLECTORS
from incisive.node.check.model import ALIASES, AREA_TITLES, AREAS, Facts, Report, Row, Verdict
from incisive.node.check.profiles import CheckContext, Profile
from incisive.node.check.rules import NEEDS, RULES
from incisive.node.check.system import System


def parse_only(only: str | Iterable[str] | None) -> list[str]:
    """Areas from ``--only cpu,gpu`` (aliases such as ram, disk, backup accepted), in report order."""
    if only is None:
        return list(AREAS)
    items = only.split(",") if isinstance(only, str) else list(only)
    wanted: set[str] = set()
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        area = ALIASES.get(item, item)
        if area not in AREAS:
            raise InputError(f"unknown area {item!r} in --only; choose from {', '.join(AREAS)}")
        wanted.add(area)
    if not wanted:
        raise InputError("--only needs at least one area")
    return [a for a in AREAS if a in wanted]


def _safe_collect(name: str, system: System, ctx: CheckContext) -> Facts:
    try:
        return COLLECTORS[name](system, ctx)
    except Exception as exc:  # a collector bug must become "unknown", never a traceback
        return {"errors": {"collector": f"{name} collector failed: {type(exc).__name__}: {exc}"},
                "collector_failed": True}


def collect(system: System, ctx: CheckContext, areas: list[str]) -> dict[str, Facts]:
    names = sorted({n for area in areas for n in NEEDS[area]})
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = {n: pool.submit(_safe_collect, n, system, ctx) for n in names}
        return {n: f.result() for n, f in futures.items()}


def judge(facts: dict[str, Facts], profile: Profile, ctx: CheckContext, areas: list[str]) -> list[Row]:
    rows: list[Row] = []
    for area in areas:
        area_facts = facts.get(area)
        if area_facts and area_facts.get("collector_failed"):
            rows.append(Row(f"{area}.collector", area, f"{AREA_TITLES[area]} readable",
                            f"unknown: {area_facts['errors']['collector']}", Verdict.UNKNOWN,
                            "report this to the integrator with the --report file"))
            continue
        try:
            produced = RULES[area](facts, profile, ctx)
        except Exception as exc:
            produced = [Row(f"{area}.rules", area, f"{AREA_TITLES[area]} judged",
                            f"unknown: rule error {type(exc).__name__}: {exc}", Verdict.UNKNOWN,
                            "report this to the integrator with the --report file")]
        rows.extend(r for r in produced if r.id not in profile.skip)
    return rows


def run_check(system: System, profile: Profile, ctx: CheckContext | None = None,
              only: str | Iterable[str] | None = None) -> Report:
    """Check ``system`` against ``profile``; never raises for what it finds on the machine."""
    ctx = ctx or CheckContext()
    areas = parse_only(only)
    started = time.monotonic()
    facts = collect(system, ctx, areas)
    rows = judge(facts, profile, ctx, areas)
    try:
        host = system.hostname()
    except Exception:
        host = "unknown"
    return Report(
        profile=profile.name,
        host=host,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        duration_s=time.monotonic() - started,
        areas=areas,
        rows=rows,
    )

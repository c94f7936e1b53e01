"""Fixtures for the sandbox tests: a fake node directory to hide, hostile bundles, the attempt → outcome matrix.

Every hostile attempt a test sees is recorded in :data:`MATRIX` and printed at the end of the run (the
"sandbox: hostile-bundle matrix" section), so CI output shows what each attempt got (errno or kill reason).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from incisive.federated.sandbox import Limits, Sandbox, unavailable

BUNDLES = Path(__file__).parent / "bundles"
MATRIX: list[str] = []
ATTEMPT = re.compile(r"^ATTEMPT (.+?) => (.+)$", re.M)
SMALL = Limits(address_space_mb=2048, cpu_seconds=120, processes=32, file_size_mb=64, open_files=128,
               wall_seconds=300, call_seconds=120, max_output_mb=8)


def record(bundle: str, what: str, outcome: str) -> None:
    line = f"{bundle:<16} {what:<44} → {outcome}"
    MATRIX.append(line)
    print(line)


def attempts(log: Path) -> dict[str, str]:
    """``ATTEMPT what => outcome`` lines a bundle printed to stderr (the node-local sandbox log)."""
    return dict(ATTEMPT.findall(log.read_text(errors="replace")))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MATRIX:
        terminalreporter.section("sandbox: hostile-bundle matrix (bundle, attempt → outcome)")
        for line in MATRIX:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def bwrap_ready() -> None:
    reason = unavailable("bwrap")
    if reason:
        pytest.fail(f"the sandbox tests need bubblewrap: {reason}")


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A node directory as the sandbox must hide it: secrets, catalogue, store."""
    node = tmp_path / "node"
    (node / "secrets").mkdir(parents=True)
    (node / "secrets" / "pseudonym.key").write_bytes(b"K" * 32)
    (node / "secrets" / "agent.key").write_bytes(b"A" * 32)
    for p in (node / "secrets").iterdir():
        p.chmod(0o600)
    (node / "catalogue.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    (node / "store" / "ab").mkdir(parents=True)
    (node / "store" / "ab" / ("ab" + "0" * 62)).write_bytes(b"DICM pixels")
    return node


SandboxFactory = Callable[..., Sandbox]


@pytest.fixture
def make_sandbox(tmp_path: Path, node_dir: Path, bwrap_ready: None) -> Iterator[SandboxFactory]:
    """``make_sandbox("escape", limits=…, env=…, mode=…)``: a started Sandbox on a fixture bundle (closed after)."""
    opened: list[Sandbox] = []

    def make(bundle: str | Path, *, limits: Limits = SMALL, env: dict[str, str] | None = None,
             mode: str = "bwrap", job: str = "job-1", inputs: Path | None = None) -> Sandbox:
        path = bundle if isinstance(bundle, Path) else BUNDLES / bundle
        box = Sandbox(path, inputs=inputs, scratch=tmp_path / "jobs" / job / "scratch", limits=limits,
                      mode=mode, forbidden=[node_dir], log=tmp_path / "jobs" / job / "sandbox.log", env=env or {})
        opened.append(box)
        return box

    yield make
    for box in opened:
        box.close()

"""``node check`` flags a node directory whose files or directories group or others can reach (issue 16 item 6):
on recorded machines and on a real node directory through the live system."""

from __future__ import annotations

from pathlib import Path

from incisive.node.check import Verdict
from incisive.node.check.collectors.access import collect_modes
from incisive.node.check.profiles import CheckContext, get_profile
from incisive.node.check.runner import run_check
from incisive.node.check.system import LiveSystem
from incisive.node.home import Node

from .conftest import check_host


def _row(report: object, row_id: str = "access.file-modes") -> object:
    return next(r for r in report.rows if r.id == row_id)  # type: ignore[attr-defined]


def test_recorded_loose_modes_fail_and_name_the_paths() -> None:
    row = _row(check_host("laptop", only="access"))
    assert row.verdict is Verdict.FAIL  # type: ignore[attr-defined]
    assert "catalogue.db 0644" in row.measured and ". 0755" in row.measured  # type: ignore[attr-defined]
    assert "secrets/pseudonym.key" not in row.measured  # type: ignore[attr-defined]  # 0600 is fine
    assert "chmod -R go-rwx /var/lib/incisive" in row.fix  # type: ignore[attr-defined]


def test_recorded_private_node_passes_and_missing_is_unknown() -> None:
    assert _row(check_host("workstation", only="access")).verdict is Verdict.PASS  # type: ignore[attr-defined]
    assert _row(check_host("vm", only="access")).verdict is Verdict.UNKNOWN  # type: ignore[attr-defined]


def test_live_node_directory(tmp_path: Path) -> None:
    home = tmp_path / "node"
    node = Node.init(home, provider="Check Hospital")
    node.catalogue.dispose()
    for path in [home, *home.rglob("*")]:  # what incisive makes under umask 077
        path.chmod(0o700 if path.is_dir() else 0o600)
    ctx = CheckContext(store_path=str(home))
    profile = get_profile("node-spec-1.1")
    assert _row(run_check(LiveSystem(), profile, ctx, "access")).verdict is Verdict.PASS  # type: ignore[attr-defined]
    (home / "catalogue.db").chmod(0o644)
    (home / "logs").chmod(0o755)
    row = _row(run_check(LiveSystem(), profile, ctx, "access"))
    assert row.verdict is Verdict.FAIL  # type: ignore[attr-defined]
    assert "catalogue.db 0644" in row.measured and "logs 0755" in row.measured  # type: ignore[attr-defined]
    modes = collect_modes(LiveSystem(), str(home))
    assert modes is not None and modes["."] == 0o700 and "catalogue.db" in modes

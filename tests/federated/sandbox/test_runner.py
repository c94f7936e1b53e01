"""The runner itself: the shipped bundle's init, the protocol, refusals (forbidden paths, no sandbox), mode off."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

from incisive.federated.bundle import shipped_bundle
from incisive.federated.sandbox import Limits, Sandbox, SandboxError, limits, probe, unavailable
from incisive.federated.sandbox.validate import check_arrays
from tests.federated.sandbox.conftest import SandboxFactory, record

TABULAR = shipped_bundle("tabular-risk")
TABULAR_STATE = [("weight", (1, 30), "float32"), ("bias", (1,), "float32")]
TABULAR_PARAMS = [("p0", (1, 30), "float32"), ("p1", (1,), "float32")]  # the FL init names them p0 … pN


def test_shipped_tabular_risk_init(make_sandbox: SandboxFactory) -> None:
    with make_sandbox(TABULAR, limits=Limits()) as box:
        result, arrays = box.call("init", {"seed": 3}, expect=lambda r, a: check_arrays(a, TABULAR_PARAMS))
        assert result == {"names": ["p0", "p1"]}
        again, same = box.call("init", {"seed": 3})  # one worker per job: torch was imported once
        assert again == result and np.array_equal(same["p0"], arrays["p0"])
        state, named = box.call("state", {}, expect=lambda r, a: check_arrays(a, TABULAR_STATE))
        assert state == {"names": ["weight", "bias"]} and np.isfinite(named["weight"]).all()


def test_shipped_tabular_risk_init_mode_off(make_sandbox: SandboxFactory) -> None:
    with make_sandbox(TABULAR, limits=Limits(), mode="off") as box:
        result, arrays = box.call("init", {}, expect=lambda r, a: check_arrays(a, TABULAR_PARAMS))
        assert result == {"names": ["p0", "p1"]} and arrays["p1"].shape == (1,)


def test_ping_round_trips_arrays(make_sandbox: SandboxFactory) -> None:
    sent = {"x": np.arange(12, dtype=np.float64).reshape(3, 4), "y": np.array([1, 0, 1], dtype=np.int64)}
    with make_sandbox("chatty") as box:
        result, arrays = box.call("ping", {"round": 1}, sent)
        assert result["pong"] is True and result["pid"] > 1 and result["cpu_s"] > 0
        assert set(arrays) == {"x", "y"} and all(np.array_equal(arrays[k], sent[k]) for k in sent)
        with pytest.raises(SandboxError, match=r"^bundle raised UnknownOp$"):
            box.call("no-such-op", {})
        assert box.call("ping", {})[0]["pong"] is True  # an error reply leaves the worker usable


def test_bundle_output_on_stdout_does_not_corrupt_the_protocol(make_sandbox: SandboxFactory) -> None:
    with make_sandbox("chatty") as box:
        result, arrays = box.call("state", {}, expect=lambda r, a: check_arrays(a, TABULAR_STATE))
    assert result == {"names": ["weight", "bias"]} and float(arrays["weight"].sum()) == 30.0
    log = box.log.read_text()  # type: ignore[union-attr]
    assert "CHATTY top-level print" in log and "CHATTY os.write(1)" in log and "raw bytes on fd 1" in log
    record("chatty", "print / write to fd 1", "protocol intact, text in the node-local log")


def test_missing_module_fails_at_start(make_sandbox: SandboxFactory) -> None:
    box = make_sandbox("missing_import")
    with pytest.raises(SandboxError) as err:
        box.__enter__()
    record("missing_import", "import a module that is not installed", str(err.value))
    assert str(err.value) == "bundle raised ModuleNotFoundError while importing task.py"
    assert box.proc is not None and box.proc.poll() is not None
    log = box.log.read_text()  # type: ignore[union-attr]
    assert "incisive_definitely_not_installed" in log  # the traceback stays in the node-local log


def test_only_builtin_exception_names_cross() -> None:
    assert Sandbox._error_name({"error": "MemoryError"}) == "MemoryError"
    assert Sandbox._error_name({"error": "SecretKeyIs_K123"}) == "a non-built-in exception"
    assert Sandbox._error_name({"error": ["x"]}) == "a non-built-in exception"


@pytest.mark.parametrize("where", ["bundle", "scratch", "inputs"])
def test_refuses_to_bind_a_forbidden_path(tmp_path: Path, node_dir: Path, where: str) -> None:
    dirs = {"bundle": TABULAR, "scratch": tmp_path / "scratch", "inputs": tmp_path / "in"}
    dirs[where] = node_dir.parent if where != "scratch" else node_dir
    box = Sandbox(dirs["bundle"], inputs=dirs["inputs"], scratch=dirs["scratch"], limits=Limits(),
                  forbidden=[node_dir / "secrets"])
    with pytest.raises(SandboxError, match=f"^sandbox refused to start: the {where} directory "):
        box.__enter__()
    assert box.proc is None


def test_fails_closed_without_a_process_bound(make_sandbox: SandboxFactory, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    if limits.os.geteuid() != 0:
        pytest.skip("as non-root RLIMIT_NPROC bounds processes")
    monkeypatch.setattr(limits, "CGROUP_ROOT", tmp_path / "no-cgroups")
    assert unavailable() == "no pids cgroup can be created and RLIMIT_NPROC is not enforced for root"
    with pytest.raises(SandboxError, match=r"^sandbox unavailable: no pids cgroup can be created"):
        make_sandbox("chatty").__enter__()


def test_unavailable_reasons(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert unavailable() is None and unavailable("off") is None
    monkeypatch.setattr(probe, "BWRAP", str(tmp_path / "missing" / "bwrap"))
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert unavailable() == "bubblewrap not installed (apt install bubblewrap)"
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace, likely because the "
                    "kernel does not allow non-privileged user namespaces.' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(probe, "BWRAP", str(fake))
    assert unavailable().startswith("user namespaces disabled (bwrap: No permissions")  # type: ignore[union-attr]


@pytest.mark.slow
def test_fixed_cost_of_a_job_start(tmp_path: Path, bwrap_ready: None) -> None:
    """Start + ``init`` of tabular-risk (python + torch import), under bwrap and as a plain subprocess: wall time
    (load-dependent) and the worker's own CPU seconds (load-independent: the cage adds none to Python's work)."""
    wall: dict[str, list[float]] = {"bwrap": [], "off": []}
    cpu: dict[str, list[float]] = {"bwrap": [], "off": []}
    for i in range(3):
        for mode in ("bwrap", "off"):
            started = time.monotonic()
            with Sandbox(TABULAR, inputs=None, scratch=tmp_path / f"{mode}-{i}", limits=Limits(), mode=mode) as box:
                box.call("init", {})
                wall[mode].append(time.monotonic() - started)
                cpu[mode].append(float(box.call("ping", {})[0]["cpu_s"]))
    w = {m: statistics.median(t) for m, t in wall.items()}
    c = {m: statistics.median(t) for m, t in cpu.items()}
    record("(fixed cost)", "job start + init, tabular-risk, median of 3",
           f"wall: bwrap {w['bwrap']:.2f} s, plain {w['off']:.2f} s; worker CPU: bwrap {c['bwrap']:.2f} s, "
           f"plain {c['off']:.2f} s")
    assert w["bwrap"] < 120 and c["bwrap"] < 2 * c["off"] + 1


def test_stale_job_groups_are_swept(bwrap_ready: None) -> None:
    """A runtime killed before close() leaves an empty pids group; the next job start removes it (not a live one)."""
    group = limits.PidsCgroup.create(4)
    assert group is not None
    parent = group.path.parent
    stale, fresh = parent / f"{limits.CGROUP_PREFIX}stale-test", parent / f"{limits.CGROUP_PREFIX}fresh-test"
    for p in (stale, fresh):
        p.mkdir()
    old = time.time() - limits.STALE_SECONDS - 60
    os.utime(stale, (old, old))
    try:
        again = limits.PidsCgroup.create(4)
        assert again is not None
        again.remove()
        assert not stale.exists() and fresh.exists() and group.path.exists()
    finally:
        for p in (stale, fresh):
            with contextlib.suppress(OSError):
                p.rmdir()
        group.remove()


def test_an_environment_under_tmp_is_not_hidden_by_the_sandbox_tmp(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout under /tmp (a CI clone) had its venv covered by the sandbox's /tmp tmpfs: every start failed."""
    from incisive.federated.sandbox import runner

    venv = Path("/tmp") / "some-checkout" / ".venv"
    monkeypatch.setattr(runner, "python_dirs", lambda: [venv])
    argv = runner.bwrap_argv(tmp_path / "bundle", None, tmp_path / "scratch", Limits(), {})
    tmpfs = max(i for i, a in enumerate(argv) if a == "--tmpfs" and argv[i + 1] == "/tmp")
    bind = argv.index(str(venv))
    assert argv[bind - 1] == "--ro-bind" and bind > tmpfs

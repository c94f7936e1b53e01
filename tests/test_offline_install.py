"""Offline install (issue 18 item 5): ``make wheelhouse`` -> ``scripts/install-offline.sh`` into a fresh venv with
no package index (and, as root, no network at all: ``unshare -n``) -> ``incisive --help`` and
``incisive node check --json`` work from that venv. Slow: copies ~360 MB of wheels and installs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install-offline.sh"
LINE = re.compile(r"^(?P<name>[a-z0-9-]+)==(?P<version>\S+) --hash=sha256:[0-9a-f]{64}$")


def _python311() -> str:
    base = getattr(sys, "_base_executable", sys.executable)
    return str(Path(base).resolve())


def _offline_prefix() -> list[str]:
    """As root, run in a new network namespace: only loopback, so any attempt to reach an index fails."""
    unshare = shutil.which("unshare")
    if os.geteuid() == 0 and unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


@pytest.mark.slow
def test_wheelhouse_then_offline_install_then_check(tmp_path: Path) -> None:
    wheelhouse, venv = tmp_path / "wheelhouse", tmp_path / "venv"
    built = subprocess.run(["make", "-o", ".venv/.installed", "wheelhouse", f"WHEELHOUSE={wheelhouse}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    lines = [ln for ln in (wheelhouse / "requirements.txt").read_text().splitlines() if not ln.startswith("#")]
    pins = {m["name"]: m["version"] for m in map(LINE.match, lines) if m}
    assert len(pins) == len(lines) == len(list(wheelhouse.glob("*.whl")))  # every wheel pinned and hashed
    assert pins["torch"] == "2.13.0+cpu" and pins["incisive"] == "0.1.0"
    assert not [n for n in pins if n.startswith("nvidia-") and n != "nvidia-ml-py"]  # no CUDA wheels

    env = {**os.environ, "PYTHON": _python311(), "PIP_NO_COMPILE": "1", "INCISIVE_NODE": str(tmp_path / "none")}
    done = subprocess.run([*_offline_prefix(), "bash", str(SCRIPT), str(wheelhouse), str(venv)],
                          capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["rows"] and report["profile"] == "node-spec-1.1"
    assert "installed incisive 0.1.0" in done.stderr

    # the installed venv is self-contained: its own incisive, not this checkout's
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import incisive, torch; "
                            "print(incisive.__file__); print(torch.__version__)"], capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    path, torch_version = where.stdout.split()
    assert path.startswith(str(venv)) and torch_version == "2.13.0+cpu"
    helped = subprocess.run([str(venv / "bin" / "incisive"), "--help"], capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and "node" in helped.stdout
    checked = subprocess.run([str(venv / "bin" / "incisive"), "node", "check", "--json", "--only", "os"],
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode in (0, 1, 2) and json.loads(checked.stdout)["areas"] == ["os"]

    # a wheel whose hash does not match its pin is refused
    small = min(wheelhouse.glob("*.whl"), key=lambda p: p.stat().st_size)
    name = next(n for n in pins if small.name.lower().replace("_", "-").startswith(f"{n}-"))
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{name}=={pins[name]} --hash=sha256:{'0' * 64}\n")
    refused = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index", "--find-links",
                              str(wheelhouse), "--require-hashes", "--force-reinstall", "--no-deps", "-r", str(bad)],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PIP_CONFIG_FILE": "/dev/null"})
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr


def test_install_script_refuses_bad_arguments(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in (([], "usage"), ([str(tmp_path / "missing")], "no such wheelhouse"),
                          ([str(empty)], "has no requirements.txt")):
        done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    (empty / "requirements.txt").write_text("")
    used = tmp_path / "used"
    (used / "bin").mkdir(parents=True)
    done = subprocess.run(["bash", str(SCRIPT), str(empty), str(used)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHON": _python311()})
    assert done.returncode == 2 and "not empty" in done.stderr


def test_wheelhouse_check_refuses_cuda_torch(tmp_path: Path) -> None:
    for name in ("torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "nvidia_cublas_cu12-12.8.4.1-py3-none-manylinux_2_27_x86_64.whl",
                 "incisive-0.1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"not really a wheel")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "wheelhouse.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "must be the CPU build" in done.stderr and "a CUDA wheel" in done.stderr
    assert not (tmp_path / "requirements.txt").exists()

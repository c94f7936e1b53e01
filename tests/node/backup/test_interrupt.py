"""kill -9 in the middle of a copy, then resume; ingest during a backup gives a consistent snapshot.

The CLI runs in a subprocess with INCISIVE_BACKUP_TEST_PAUSE=N:DIR: after N copies it creates DIR/paused and
waits for DIR/resume, so the kill (or the concurrent import) happens at a known point — no timing guesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from incisive.demo.synth import CohortSpec, generate_cohort
from incisive.node.backup import config, ops
from incisive.node.backup.manifest import Repository
from incisive.node.backup.replica import PAUSE_ENV
from incisive.node.fsck import fsck
from incisive.node.home import Node
from tests.node.backup.helpers import catalogue_rows, import_cohort

PAUSE_AT = 5


@pytest.fixture(scope="module")
def second_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort2")
    generate_cohort(out, CohortSpec(patients=4, seed=23, size=32, ct_slices=4, mr_slices=3))
    return out


def _start(home: Path, hook: Path) -> subprocess.Popen[str]:
    hook.mkdir()
    env = {**os.environ, PAUSE_ENV: f"{PAUSE_AT}:{hook}"}
    return subprocess.Popen([sys.executable, "-m", "incisive", "backup", "run", "--json", "--home", str(home)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_paused(proc: subprocess.Popen[str], hook: Path) -> None:
    deadline = time.monotonic() + 120
    while not (hook / "paused").exists():
        if proc.poll() is not None:
            raise AssertionError(f"backup exited early: {proc.communicate()}")
        assert time.monotonic() < deadline, "backup never reached the pause point"
        time.sleep(0.05)


def test_kill_9_then_resume(loaded: Node, second_cohort: Path, tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    drive.mkdir()
    target = config.add_target(loaded.home, "usb", str(drive))
    first, _ = ops.run(loaded, target)
    import_cohort(loaded, second_cohort / "dicom")

    hook = tmp_path / "hook"
    proc = _start(loaded.home, hook)
    _wait_paused(proc, hook)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    repo = Repository.for_node(drive, loaded.settings.node_id)
    assert repo.snapshot_ids() == [first.snapshot]  # the interrupted snapshot does not exist
    assert len(repo.incomplete()) == 1
    assert ops.verify(target, loaded.settings.node_id, full=True).ok  # the earlier one is intact

    resumed, _ = ops.run(loaded, target)
    assert resumed.cleaned == 1
    assert resumed.skipped == first.objects + PAUSE_AT  # nothing copied before the kill is copied again
    assert resumed.copied == resumed.objects - first.objects - PAUSE_AT > 0
    assert repo.incomplete() == [] and len(repo.snapshot_ids()) == 2
    assert ops.verify(target, loaded.settings.node_id, full=True).ok


def test_ingest_during_backup_is_consistent(loaded: Node, second_cohort: Path, tmp_path: Path,
                                            restore_url: str) -> None:
    drive = tmp_path / "drive"
    drive.mkdir()
    target = config.add_target(loaded.home, "usb", str(drive))
    rows_at_start = catalogue_rows(loaded.catalogue.url)

    hook = tmp_path / "hook"
    proc = _start(loaded.home, hook)
    _wait_paused(proc, hook)
    import_cohort(loaded, second_cohort / "dicom")  # ingest goes on while the backup is copying
    (hook / "resume").touch()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    snap = json.loads(out)

    restored = ops.restore(target, loaded.settings.node_id, snap["snapshot"], tmp_path / "restored",
                           catalogue_url=restore_url)
    node = Node.open(Path(restored.home))
    try:
        assert fsck(node).clean
        assert catalogue_rows(node.catalogue.url) == rows_at_start
    finally:
        node.catalogue.dispose()
    later, _ = ops.run(loaded, target)
    assert later.objects > snap["objects"] and later.copied == later.objects - snap["objects"]

"""The agent's SuperNode bookkeeping: runtimes a crashed agent left behind are stopped, nothing else is."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from incisive.federated.deploy import RUNTIME_MODULE
from incisive.node.agent_link import AGENT_DIR
from incisive.node.fl.supernodes import Supernodes
from incisive.node.home import Node

SLEEP = "import time; time.sleep(60)"


def _gone(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.05)
    return False


def test_orphaned_runtime_is_stopped_other_pids_are_left_alone(sqlite_node: Node) -> None:
    # a node runtime the previous agent started (its command line names the runtime module), and an unrelated
    # process that happens to hold a recorded pid
    orphan = subprocess.Popen([sys.executable, "-c", SLEEP, RUNTIME_MODULE], start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", SLEEP], start_new_session=True)
    try:
        state = sqlite_node.home / AGENT_DIR / "supernodes.json"
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"job-a": {"pid": orphan.pid, "deadline": 0},
                                     "job-b": {"pid": bystander.pid, "deadline": 0}}))
        client: Any = None  # not used when reaping
        Supernodes(sqlite_node, client)
        assert _gone(orphan)
        assert bystander.poll() is None
        assert json.loads(state.read_text()) == {}
    finally:
        for proc in (orphan, bystander):
            proc.kill()
            proc.wait(5)


def test_runtime_module_is_what_supernode_argv_runs(tmp_path: Path) -> None:
    from incisive.federated.deploy import supernode_argv

    assert RUNTIME_MODULE in supernode_argv("127.0.0.1:1", tmp_path)

"""Hostile: forks up to 10 000 processes that sleep (bounded by the job's pids cgroup)."""

import errno
import os
import sys
import time


class _Model:
    def state_dict(self):
        return {}


def build_model(manifest):
    target = int(os.environ.get("FORKS", "10000"))
    started = 0
    outcome = "SUCCEEDED"
    for _ in range(target):
        try:
            pid = os.fork()
        except OSError as exc:
            outcome = f"{type(exc).__name__}({errno.errorcode.get(exc.errno, exc.errno)})"
            break
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        started += 1
    print(f"ATTEMPT fork {target} processes => {outcome} after {started}", file=sys.stderr, flush=True)
    return _Model()

"""Can a sandbox start here? :func:`unavailable` answers None or the reason (``node check``, job refusals)."""

from __future__ import annotations

import os
import shutil
import subprocess

from incisive.federated.sandbox.limits import PidsCgroup

BWRAP = "/usr/bin/bwrap"
PROBE_TIMEOUT_S = 20.0
NAMESPACE_WORDS = ("namespace", "operation not permitted", "permission denied", "no permissions")


def bwrap_unavailable() -> str | None:
    """None when bubblewrap can create the sandbox's namespaces, else why not (one PHI-free line)."""
    if not os.access(BWRAP, os.X_OK) and shutil.which("bwrap") is None:
        return "bubblewrap not installed (apt install bubblewrap)"
    argv = [BWRAP, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", "65534", "--gid", "65534", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
            "/bin/true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        return f"bubblewrap did not start within {PROBE_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return f"bubblewrap cannot run ({exc.strerror})"
    if done.returncode == 0:
        return None
    detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
    detail = detail.removeprefix("bwrap: ")[:160]
    if any(w in detail.lower() for w in NAMESPACE_WORDS):
        return f"user namespaces disabled (bwrap: {detail})"
    return f"bubblewrap failed: {detail}"


def unavailable(mode: str = "bwrap") -> str | None:
    """None when a sandbox of ``mode`` can start here, else the reason.

    ``bwrap``: bubblewrap installed, user/pid/net namespaces creatable, and processes boundable (a pids cgroup,
    or ``RLIMIT_NPROC`` when not root). ``off``: always None (a plain subprocess; ``node check`` still fails).
    """
    if mode == "off":
        return None
    if mode != "bwrap":
        return f"unknown sandbox mode {mode!r}"
    reason = bwrap_unavailable()
    if reason:
        return reason
    if os.geteuid() == 0:
        group = PidsCgroup.create(1)
        if group is None:
            return "no pids cgroup can be created and RLIMIT_NPROC is not enforced for root"
        group.remove()
    return None

"""Rules for the bundle sandbox (issue 15 item 5): no sandbox, no third-party code — and ``mode = "off"`` fails."""

from __future__ import annotations

from incisive.node.check.model import Facts, Row, Verdict
from incisive.node.check.profiles import CheckContext, Profile
from incisive.node.check.rules.common import row, unknown, why

USERNS_FIX = ("allow unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1 (Debian) or "
              "kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu 24.04), then re-run")


def judge_sandbox(facts: dict[str, Facts], p: Profile, ctx: CheckContext) -> list[Row]:
    sb = facts.get("sandbox") or {}
    rows: list[Row] = []
    req = "bundle sandbox: bubblewrap installed, user + network namespaces allowed"
    if not sb.get("linux"):
        rows.append(row("sandbox.bwrap", req, "not Linux: bundle code cannot be sandboxed", Verdict.FAIL,
                        "run the node on Linux (bundle jobs are refused here)"))
    elif sb.get("bwrap_ok"):
        rows.append(row("sandbox.bwrap", req, "bubblewrap starts the sandbox's namespaces", Verdict.PASS))
    elif not sb.get("bwrap_installed"):
        rows.append(row("sandbox.bwrap", req, "bubblewrap not installed: bundle jobs are refused", Verdict.FAIL,
                        "apt install bubblewrap (or dnf install bubblewrap)"))
    else:
        rows.append(row("sandbox.bwrap", req, f"bubblewrap cannot create namespaces: {why(sb, 'bwrap')}",
                        Verdict.FAIL, USERNS_FIX))
    req = "bundle processes bounded: a pids cgroup, or RLIMIT_NPROC when not root"
    if not sb.get("linux"):
        pass
    elif sb.get("pids_cgroup"):
        rows.append(row("sandbox.processes", req, "pids cgroup controller available", Verdict.PASS))
    elif sb.get("root") is False:
        rows.append(row("sandbox.processes", req, "not root: RLIMIT_NPROC applies", Verdict.PASS))
    elif sb.get("root") is None:
        rows.append(unknown("sandbox.processes", req, "no pids cgroup controller; uid not readable",
                            "mount the pids cgroup controller or run the node as a non-root user"))
    else:
        rows.append(row("sandbox.processes", req, "root and no pids cgroup: bundle jobs are refused",
                        Verdict.FAIL, "mount the pids cgroup controller or run the node as a non-root user"))
    req = 'policy.toml sandbox mode = "bwrap" (bundle code caged)'
    mode = sb.get("mode")
    if not sb.get("linux"):
        pass
    elif mode is None:
        rows.append(unknown("sandbox.mode", req, why(sb, "mode"), "fix policy.toml in the node directory"))
    elif mode == "bwrap":
        rows.append(row("sandbox.mode", req, "bwrap", Verdict.PASS))
    else:
        rows.append(row("sandbox.mode", req, f"{mode}: bundle code runs without a sandbox (operator opt-out)",
                        Verdict.FAIL, "incisive node policy set --sandbox bwrap (after fixing the rows above)"))
    return rows

"""Rules: pure functions from collected facts (all areas) and a profile to report rows."""

from __future__ import annotations

from collections.abc import Callable

from incisive.node.check.model import Facts, Row
from incisive.node.check.profiles import CheckContext, Profile
from incisive.node.check.rules import access, gpu, hardware, platform, sandbox, services

Rule = Callable[[dict[str, Facts], Profile, CheckContext], list[Row]]

RULES: dict[str, Rule] = {
    "cpu": hardware.judge_cpu,
    "memory": hardware.judge_memory,
    "storage": hardware.judge_storage,
    "gpu": gpu.judge_gpu,
    "os": platform.judge_os,
    "network": platform.judge_network,
    "access": access.judge_access,
    "runtime": lambda f, p, c: [*access.judge_runtime(f, p, c), *services.judge_services(f, p, c)],
    "sandbox": sandbox.judge_sandbox,
    "redundancy": access.judge_redundancy,
    "manual": access.judge_manual,
}

NEEDS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu", "gpu"),
    "memory": ("memory", "os"),
    "storage": ("storage", "os"),
    "gpu": ("gpu",),
    "os": ("os",),
    "network": ("network", "os"),
    "access": ("access",),
    "runtime": ("runtime", "services"),
    "sandbox": ("sandbox",),
    "redundancy": ("redundancy",),
    "manual": (),
}
"""The collectors whose facts each area's rules read."""

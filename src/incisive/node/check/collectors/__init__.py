"""Collectors: read the machine through a :class:`~incisive.node.check.system.System`, return plain facts.

Each module has ``collect(system, ctx) -> Facts``. A fact that cannot be read is None (or absent) and the
reason is kept in ``facts["errors"][fact]``; collectors never raise for missing tools or permissions.
"""

from __future__ import annotations

from collections.abc import Callable

from incisive.node.check.collectors import (
    access,
    cpu,
    gpu,
    memory,
    network,
    osinfo,
    redundancy,
    runtime,
    sandbox,
    services,
    storage,
)
from incisive.node.check.model import Facts
from incisive.node.check.profiles import CheckContext
from incisive.node.check.system import System

Collector = Callable[[System, CheckContext], Facts]

COLLECTORS: dict[str, Collector] = {
    "cpu": cpu.collect,
    "memory": memory.collect,
    "storage": storage.collect,
    "gpu": gpu.collect,
    "os": osinfo.collect,
    "network": network.collect,
    "access": access.collect,
    "runtime": runtime.collect,
    "sandbox": sandbox.collect,
    "redundancy": redundancy.collect,
    "services": services.collect,
}

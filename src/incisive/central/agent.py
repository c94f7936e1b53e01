"""Federation of a Central Node: every tenant is its own node towards the platform.

Each tenant is enrolled on its own (:func:`enrol_tenant`: its own Ed25519 identity and Flower key, made in its
own node directory, ``central/tenants/<id>/secrets``), so the platform registers, revokes and audits it like any
hospital's node, and a researcher sees "Hospital D" and "Hospital E" as two nodes. ``incisive central agent``
(:class:`CentralAgent`) runs one :class:`incisive.node.agent.Agent` per enrolled tenant in one process: each
polls for its own jobs, sends its own heartbeats, answers from its own catalogue under its own policy (the one its
provider sets through the tenant API) and writes its own audit chain; its FL jobs start its own SuperNode
(a process per participating tenant, reading only that tenant's store, decrypted with that tenant's key).

A tenant the platform refuses (revoked) stops alone; the others go on. A tenant erased while the agent runs is
stopped at the next sweep (every ``sweep_s``), before its directory goes: erase fences the tenant first.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from incisive.central.home import Central
from incisive.common.logging import get_logger
from incisive.node.agent import Agent, AgentRevoked
from incisive.node.agent_link import AGENT_CONFIG, AGENT_DIR, enrol

log = get_logger("central.agent")


def enrol_tenant(central: Central, tenant_id: str, url: str, token: str,
                 ca_file: Path | None = None) -> dict[str, Any]:
    """Enrol one tenant with the platform as its own node (the invite token names that provider)."""
    record = central.tenant(tenant_id)
    data = enrol(central.tenant_node(record.id), url, token, ca_file=ca_file)
    central.audit.append("operator", "central.tenant.enrol", target=record.id, details={"platform": url})
    return data


def enrolled(central: Central) -> list[str]:
    """Ids of the active tenants that have been enrolled with a platform."""
    return [t.id for t in central.tenants()
            if (central.tenant_node(t.id).home / AGENT_DIR / AGENT_CONFIG).is_file()]


@dataclass
class _Running:
    agent: Agent
    thread: threading.Thread
    outcome: list[str] = field(default_factory=list)


class CentralAgent:
    """One :class:`Agent` per enrolled tenant, each in its own thread; :meth:`run` blocks until :meth:`stop`."""

    def __init__(self, central: Central, sweep_s: float = 5.0) -> None:
        self.central = central
        self.sweep_s = sweep_s
        self.stop_event = threading.Event()
        self.running: dict[str, _Running] = {}

    def _start(self, tenant_id: str) -> None:
        agent = Agent(self.central.tenant_node(tenant_id))
        entry = _Running(agent, threading.Thread(target=self._run_one, args=(tenant_id, agent),
                                                 name=f"agent-{tenant_id}", daemon=True))
        self.running[tenant_id] = entry
        entry.thread.start()
        log.info("tenant agent started: tenant=%s node=%s", tenant_id, agent.settings.node_id)

    def _run_one(self, tenant_id: str, agent: Agent) -> None:
        try:
            agent.run()
        except AgentRevoked:
            log.warning("tenant agent stopped: tenant=%s refused by the platform (revoked or unknown)", tenant_id)
            self.central.audit.append("platform", "central.tenant.agent", target=tenant_id, outcome="revoked")
            self.running[tenant_id].outcome.append("revoked")
        except Exception as exc:  # one tenant's failure must not stop the others
            log.error("tenant agent failed: tenant=%s %s", tenant_id, type(exc).__name__)
            self.running[tenant_id].outcome.append(f"error: {type(exc).__name__}")

    def sweep(self) -> None:
        """Start agents of newly enrolled tenants; stop those of tenants no longer active (erasing, erased)."""
        active = set(enrolled(self.central))
        for tenant_id in sorted(active - set(self.running)):
            self._start(tenant_id)
        for tenant_id in sorted(set(self.running) - active):
            entry = self.running.pop(tenant_id)
            entry.agent.stop()
            entry.thread.join(30)
            log.info("tenant agent stopped: tenant=%s no longer active", tenant_id)

    def run(self) -> None:
        """Sweep until :meth:`stop` (or an interrupt); every tenant's agent is stopped on the way out."""
        try:
            self.central.reload()
            self.sweep()
            if not self.running:
                log.warning("no enrolled tenant: enrol one with 'incisive central tenant enrol'")
            while not self.stop_event.wait(self.sweep_s):
                self.central.reload()
                self.sweep()
        finally:
            for entry in self.running.values():
                entry.agent.stop()
            for entry in self.running.values():
                entry.thread.join(30)

    def stop(self) -> None:
        self.stop_event.set()

    def status(self) -> list[dict[str, Any]]:
        return [{"tenant": t, "node_id": e.agent.settings.node_id, "alive": e.thread.is_alive(),
                 "outcome": e.outcome[-1] if e.outcome else None} for t, e in sorted(self.running.items())]

"""Wake-ups between request handlers: a job was queued for a node, a result arrived for a query.

Handlers run in the worker thread pool, waiters on the event loop, so ``notify_*`` is thread-safe. Waiters always
re-check the database, so a lost wake-up only costs one wait interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


class Hub:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._answers: dict[str, set[str]] = {}
        self._generation: dict[str, int] = {}  # per node: bumped whenever a job may have been queued for it
        self._idle: dict[str, int] = {}  # node -> generation at which a claim found nothing
        self._waiters: dict[str, int] = {}  # node -> long-polls of it waiting now
        self._inbox: dict[str, list[dict[str, Any]]] = {}  # jobs handed over in memory (already marked delivered)

    def waiting_nodes(self) -> set[str]:
        return {node for node, n in self._waiters.items() if n > 0}

    def enter_wait(self, node_id: str) -> None:
        self._waiters[node_id] = self._waiters.get(node_id, 0) + 1

    def leave_wait(self, node_id: str) -> None:
        self._waiters[node_id] = self._waiters.get(node_id, 1) - 1

    def hand_over(self, node_id: str, job: dict[str, Any]) -> None:
        """Give a job (recorded as delivered) to the node's waiting long-poll, or to its next request."""
        self._inbox.setdefault(node_id, []).append(job)
        self.notify(node_key(node_id))

    def take(self, node_id: str) -> list[dict[str, Any]]:
        return self._inbox.pop(node_id, [])

    def generation(self, node_id: str) -> int:
        return self._generation.get(node_id, 0)

    def idle(self, node_id: str) -> bool:
        """True when a claim for this node found nothing and no job was queued since: skip the database."""
        return self._idle.get(node_id) == self.generation(node_id)

    def mark_idle(self, node_id: str, generation: int) -> None:
        if generation == self.generation(node_id):
            self._idle[node_id] = generation

    def bind(self) -> None:
        self.loop = asyncio.get_running_loop()

    def event(self, name: str) -> asyncio.Event:
        ev = self._events.get(name)
        if ev is None:
            ev = self._events[name] = asyncio.Event()
        return ev

    def clear(self, name: str) -> None:
        ev = self._events.get(name)
        if ev is not None:
            ev.clear()

    def job_queued(self, node_id: str) -> None:
        """Called on the event loop after jobs for ``node_id`` are committed."""
        self._generation[node_id] = self.generation(node_id) + 1
        self.notify(node_key(node_id))

    def notify(self, name: str) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.event(name).set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: self.event(name).set())

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        try:
            await asyncio.wait_for(event.wait(), timeout=max(0.0, timeout))
        except TimeoutError:
            return False
        return True

    def answer(self, query_id: str, node_id: str) -> None:
        """A node's result for a query is stored (called on the event loop); ignored once the query is done."""
        if query_key(query_id) in self._events:
            self._answers.setdefault(query_id, set()).add(node_id)
            self._events[query_key(query_id)].set()

    def answers(self, query_id: str) -> set[str]:
        return self._answers.get(query_id, set())

    def forget(self, query_id: str) -> None:
        self._events.pop(query_key(query_id), None)
        self._answers.pop(query_id, None)


def node_key(node_id: str) -> str:
    return f"node:{node_id}"


def query_key(query_id: str) -> str:
    return f"query:{query_id}"

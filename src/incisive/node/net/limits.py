"""Bounded DIMSE resources: connection caps at accept time, association slots after the AE title checks.

Two budgets, so that a stranger cannot hold what a known peer needs:

* **Connections** (:meth:`AssociationLimits.admit_connection`, the listening server's ``verify_request``): at most
  ``max_connections`` open TCP connections in all and ``max_connections_per_peer`` from one address, counted when
  a connection arrives, refused (closed at once) beyond. A connection that never sends an A-ASSOCIATE-RQ holds
  only this budget, and only until the ACSE timeout closes it (seconds).
* **Association slots** (:meth:`AssociationLimits.acquire`, on ``EVT_REQUESTED``): taken only once the calling AE
  is on the allow-list and the called AE is ours; at most ``max_associations`` in all and
  ``max_associations_per_peer`` per peer address. Beyond them the request is rejected with A-ASSOCIATE-RJ
  *rejected-transient, service-provider (presentation), local-limit-exceeded* (PS3.8 9.3.4). A slot is given
  back when the connection closes (``EVT_CONN_CLOSE``), released, aborted or timed out.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    max_associations: int
    max_associations_per_peer: int
    max_connections: int
    max_connections_per_peer: int


class AssociationLimits:
    """Thread-safe bookkeeping of association slots; connection counts come from the caller (live threads)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._holders: dict[int, str] = {}  # association id -> peer address
        self._per_peer: Counter[str] = Counter()

    def admit_connection(self, peer: str, open_total: int, open_from_peer: int) -> bool:
        """Whether one more TCP connection from ``peer`` may be accepted, given those already open."""
        b = self.budget
        return open_total < b.max_connections and open_from_peer < b.max_connections_per_peer

    def acquire(self, key: int, peer: str) -> bool:
        with self._lock:
            if key in self._holders:
                return True
            b = self.budget
            if len(self._holders) >= b.max_associations or self._per_peer[peer] >= b.max_associations_per_peer:
                return False
            self._holders[key] = peer
            self._per_peer[peer] += 1
            return True

    def release(self, key: int) -> None:
        with self._lock:
            peer = self._holders.pop(key, None)
            if peer is not None:
                self._per_peer[peer] -= 1
                if self._per_peer[peer] <= 0:
                    del self._per_peer[peer]

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._holders)

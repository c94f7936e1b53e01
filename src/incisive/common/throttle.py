"""Failed-authentication throttle (platform and node): exponential back-off and lockout per source and per
account, and aggregated audit reports, so that a flood of forged requests neither guesses a secret nor writes one
audit row per request.

* Every key (a source address, an account name) counts its failures; the count starts again after a quiet
  ``window_s`` past the end of its last back-off. From the ``free``-th failure on, the key is blocked for
  ``2^(n - free)`` seconds (at most ``backoff_max_s``); at ``lockout_failures`` for ``lockout_s``. A blocked
  request is answered 429 with ``Retry-After`` and never checked (so the answer is no oracle for a guess).
* An account's block applies to a source only when that source has failed itself in its window: guesses spread
  over many sources lock the account for them, while a source that never failed (the real owner elsewhere) is not
  locked out by someone else's guessing.
* Audit: one report per source and kind when a window opens (so a single failure is recorded at once), and one
  summary of the rest (failures and throttled attempts) when the window closes; :meth:`Throttle.flush` closes them
  all (at shutdown). At most two entries per source, kind and window, whatever the rate.

State lives in memory, per process; a restart forgets back-offs (documented in docs/platform.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_KEYS = 20_000
MAX_ACCOUNTS_LISTED = 5


@dataclass
class _Counter:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


@dataclass
class _Window:
    start: float
    failures: int = 0
    throttled: int = 0
    accounts: set[str] = field(default_factory=set)
    reason: str = ""


@dataclass(frozen=True)
class Report:
    """What to audit: ``first`` is the opening event of a window, otherwise the window's summary."""

    source: str
    kind: str
    failures: int
    throttled: int
    accounts: tuple[str, ...]
    reason: str
    first: bool
    window_s: float

    def details(self) -> dict[str, object]:
        return {"source": self.source, "kind": self.kind, "failures": self.failures, "throttled": self.throttled,
                "accounts": list(self.accounts), "reason": self.reason,
                "aggregate": "first" if self.first else "summary", "window_s": self.window_s}


class Throttle:
    def __init__(self, window_s: float = 60.0, free: int = 5, backoff_max_s: float = 300.0,
                 lockout_failures: int = 30, lockout_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.free, self.backoff_max_s = window_s, free, backoff_max_s
        self.lockout_failures, self.lockout_s, self.clock = lockout_failures, lockout_s, clock
        self._counters: dict[str, _Counter] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()
        self._next_scan = 0.0

    # -- back-off ---------------------------------------------------------------------------------------------
    def _live(self, key: str, now: float) -> _Counter | None:
        c = self._counters.get(key)
        if c is not None and now > max(c.blocked_until, c.last) + self.window_s:
            del self._counters[key]
            return None
        return c

    def retry_after(self, source: str, account: str | None = None) -> int | None:
        """Seconds the caller must wait (for a 429), or ``None`` when it may try."""
        now = self.clock()
        with self._lock:
            src = self._live(f"s:{source}", now)
            waits = [src.blocked_until - now] if src else []
            if account and src is not None and src.failures:
                acct = self._live(f"a:{account}", now)
                if acct:
                    waits.append(acct.blocked_until - now)
        wait = max(waits, default=0.0)
        return math.ceil(wait) if wait > 0 else None

    def _count(self, key: str, now: float) -> None:
        c = self._live(key, now) or self._counters.setdefault(key, _Counter())
        c.failures += 1
        c.last = now
        if c.failures >= self.lockout_failures:
            c.blocked_until = now + self.lockout_s
        elif c.failures >= self.free:
            c.blocked_until = now + min(self.backoff_max_s, 2.0 ** (c.failures - self.free))

    def failed(self, source: str, kind: str, account: str | None = None, reason: str = "") -> list[Report]:
        """Record a failed attempt; the reports to audit now."""
        now = self.clock()
        with self._lock:
            self._count(f"s:{source}", now)
            if account:
                self._count(f"a:{account}", now)
            return self._event(now, source, kind, account, reason, failed=True)

    def throttled(self, source: str, kind: str, account: str | None = None) -> list[Report]:
        """Record an attempt refused with 429 (it does not lengthen the back-off)."""
        now = self.clock()
        with self._lock:
            return self._event(now, source, kind, account, "throttled", failed=False)

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._counters.pop(f"a:{account}", None)

    # -- aggregated audit -------------------------------------------------------------------------------------
    def _event(self, now: float, source: str, kind: str, account: str | None, reason: str,
               failed: bool) -> list[Report]:
        out = self._close(now)
        window = self._windows.get((source, kind))
        if window is None:
            self._windows[(source, kind)] = _Window(start=now)
            out.append(Report(source, kind, int(failed), int(not failed), (account,) if account else (), reason,
                              True, self.window_s))
        else:
            window.failures += int(failed)
            window.throttled += int(not failed)
            if account and len(window.accounts) < MAX_ACCOUNTS_LISTED:
                window.accounts.add(account)
            window.reason = reason if failed else window.reason
        if len(self._counters) > MAX_KEYS:
            self._counters = {k: c for k, c in self._counters.items() if c.blocked_until > now}
        return out

    def _close(self, now: float, everything: bool = False) -> list[Report]:
        if not everything and now < self._next_scan:  # windows are scanned at most once a second
            return []
        self._next_scan = now + 1.0
        out = []
        for key, w in list(self._windows.items()):
            if everything or now - w.start >= self.window_s:
                del self._windows[key]
                if w.failures or w.throttled:
                    out.append(Report(key[0], key[1], w.failures, w.throttled, tuple(sorted(w.accounts)),
                                      w.reason, False, self.window_s))
        return out

    def flush(self, everything: bool = False) -> list[Report]:
        """Summaries of the windows that are over (all of them with ``everything``: at shutdown)."""
        with self._lock:
            return self._close(self.clock(), everything)

"""Injectable clocks: everything time-dependent (pacing, drops, timeouts, reconnect back-off) takes one.

Tests use :class:`ManualClock`, whose ``sleep`` advances time instantly, so time-dependent behaviour is
checked exactly and never flakes on a busy machine.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A monotonic clock in nanoseconds that can also wait."""

    def now_ns(self) -> int:
        """Current time, nanoseconds, monotonic."""
        ...

    def sleep_s(self, seconds: float) -> None:
        """Wait ``seconds`` (no-op for non-positive values)."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic_ns`` and ``time.sleep``."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_s(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ManualClock:
    """A clock for tests: time moves only through :meth:`advance_s` or :meth:`sleep_s` (thread-safe)."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns
        self._lock = threading.Lock()
        self.sleeps_s: list[float] = []
        """Every sleep requested, for assertions."""

    def now_ns(self) -> int:
        with self._lock:
            return self._now_ns

    def advance_s(self, seconds: float) -> None:
        with self._lock:
            self._now_ns += round(seconds * 1e9)

    def sleep_s(self, seconds: float) -> None:
        if seconds > 0:
            self.sleeps_s.append(seconds)
            self.advance_s(seconds)


def wall_clock_ns() -> int:
    """Wall-clock time for ``stamp_ns`` of live captures (ns since the Unix epoch)."""
    return time.time_ns()

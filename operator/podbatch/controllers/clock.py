"""The engine's clock, injectable: every reconciler reads the time here, never from
`time` directly, so the in-memory fault harness can run hours of retention, grace
periods and deadlines in milliseconds, deterministically."""
from __future__ import annotations

import time as _time
from datetime import datetime, timezone


class SystemClock:
    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()


_clock = SystemClock()


def use(clock) -> None:
    """Replace the clock (tests); `use(SystemClock())` restores the real one."""
    global _clock
    _clock = clock


def time() -> float:
    return _clock.time()


def monotonic() -> float:
    return _clock.monotonic()


def now_iso() -> str:
    return datetime.fromtimestamp(_clock.time(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

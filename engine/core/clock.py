"""Injected clocks: wall time live, the recorded clock in replay and backtest."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class WallClock:
    """Real time, for live feeds."""

    def now_ns(self) -> int:
        return time.time_ns()


class ReplayClock:
    """Time as recorded: advanced by the replay driver to each message's stamp.

    Replays on this clock are deterministic: nothing reads the wall clock.
    """

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, ts_ns: int) -> None:
        if ts_ns > self._now:
            self._now = ts_ns

"""Replay recorded data through the engine on the recorded clock.

``speed`` is a multiple of real time (1 = as recorded) or ``None`` for as fast as
possible. Pacing follows the receive stamps, so bursts replay as bursts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from engine.core.clock import ReplayClock
from engine.core.engine import Engine
from engine.core.events import NS_PER_S, MarketData, ReplayPaused
from engine.core.snapshot import LogLine
from engine.core.symbols import display_symbol
from engine.market.capture import CaptureLine, RecordingInfo, merged_lines
from engine.market.parse import Parser, stream_symbol

log = logging.getLogger(__name__)

#: Messages applied between yields to the event loop at max speed.
BATCH = 512


def symbol_warning(primary: str, recordings: list[RecordingInfo]) -> str | None:
    """A line for the user when the configured primary symbol is not in the recordings: the
    session then trades the first symbol in the data (what :attr:`Engine.primary` does)."""
    want = stream_symbol(primary)
    found = set().union(*(r.symbols for r in recordings)) if recordings else set()
    if not found or want in found:
        return None
    first = min(recordings, key=lambda r: r.first_ns)
    traded = first.first_symbol if first.first_symbol in found else sorted(found)[0]
    names = ", ".join(r.path.name for r in recordings)
    return (f"symbols.primary is {display_symbol(want)} but {names} hold{'s' if len(recordings) == 1 else ''} only "
            f"{', '.join(display_symbol(s) for s in sorted(found))}: this session trades {display_symbol(traded)}")


def parse_speed(text: str) -> float | None:
    """``"max"`` → None; otherwise a positive multiple of real time."""
    if text.lower() == "max":
        return None
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"--speed {text!r}: expected a positive number or 'max'") from None
    if not (v > 0 and v < 1e9):
        raise ValueError(f"--speed {text!r}: expected a positive number or 'max'")
    return v


class Replay:
    """Drives an engine from capture files. ``run()`` is a coroutine; pause with ``paused``."""

    def __init__(self, engine: Engine, paths: list[Path], speed: float | None, clock: ReplayClock, *,
                 linger: bool = False, recordings: list[RecordingInfo] | None = None) -> None:
        self.engine = engine
        self.paths = paths
        self.speed = speed
        self.clock = clock
        self.parser = Parser()
        self.counters: dict[str, int] = {}
        self.lines = 0
        self.done = False
        self.linger = linger  # the desk's replay: keep market time moving after the data ends
        self._pending: Iterator[tuple[int, MarketData]] | None = None  # run_sync's place in the data
        self._held: tuple[int, MarketData] | None = None  # the first message past a stop
        self._resume = asyncio.Event()
        self._resume.set()
        engine.bus.on(ReplayPaused, self._on_paused)
        engine.replay_info.update(speed=_speed_label(speed), paused=False, progress=0, done=False)
        self._first_ns = min((r.first_ns for r in recordings), default=0) if recordings else 0
        self.warnings: list[str] = []
        note = symbol_warning(engine.settings.symbols.primary, recordings or [])
        if note is not None:
            self.warn(note)

    def warn(self, text: str) -> None:
        """Tell the user (log and stderr when headless, the desk's log pane, the summary)."""
        self.warnings.append(text)
        self.engine.replay_info["warnings"] = list(self.warnings)
        log.warning("%s", text)
        ts = self.clock.now_ns() or self._first_ns
        self.engine.log.append(LogLine(ts, "replay", text, "warn"))

    def _on_paused(self, ev: ReplayPaused) -> None:
        if ev.paused:
            self._resume.clear()
        else:
            self._resume.set()
        self.engine.replay_info["paused"] = ev.paused

    def events(self) -> Iterator[tuple[int, MarketData]]:
        """Parsed market data in receive order, with symbols for bare REST snapshots."""
        hints, lines = merged_lines(self.paths, self.counters)
        last_symbol: dict[int, str] = {}
        parser = self.parser
        cl: CaptureLine
        for cl in lines:
            if self.lines == 0:
                self.engine.replay_info["first_ns"] = cl.ts_recv
            self.lines += 1
            hint = hints[cl.source] or last_symbol.get(cl.source)
            ev = parser.parse_frame(cl.payload, cl.ts_recv, hint)
            if ev is not None:
                last_symbol[cl.source] = ev.symbol
                yield cl.ts_recv, ev

    def run_sync(self, stop_at_ns: int | None = None) -> bool:
        """Apply everything as fast as possible without an event loop (backtests, tests).

        With ``stop_at_ns``, stop before the first message stamped at or after it; a later
        call goes on from there. Returns True once the data has ended."""
        engine, clock = self.engine, self.clock
        if self._pending is None:
            self._pending = self.events()
        held = self._held
        if held is not None:
            if stop_at_ns is not None and held[0] >= stop_at_ns:
                return False
            self._held = None
            clock.advance(held[0])
            engine.on_market(held[1])
        for ts, ev in self._pending:
            if stop_at_ns is not None and ts >= stop_at_ns:
                self._held = (ts, ev)
                clock.advance(stop_at_ns - 1)  # market time reaches the cut, not past it
                engine.run_commands()
                return False
            clock.advance(ts)
            engine.on_market(ev)
        engine.run_commands()
        self._finish()
        return True

    async def run(self) -> None:
        engine, clock = self.engine, self.clock
        wall0 = time.perf_counter()
        rec0: int | None = None
        for n, (ts, ev) in enumerate(self.events(), 1):
            if not self._resume.is_set():
                await self._resume.wait()
                rec0 = None  # re-anchor pacing after a pause
            if self.speed is not None:
                if rec0 is None:
                    rec0, wall0 = ts, time.perf_counter()
                due = wall0 + (ts - rec0) / NS_PER_S / self.speed
                delay = due - time.perf_counter()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            clock.advance(ts)
            engine.on_market(ev)
            if n % BATCH == 0:
                engine.replay_info["progress"] = self.lines
                await asyncio.sleep(0)
        engine.run_commands()
        self._finish()
        if self.linger:
            await self._linger()

    async def _linger(self) -> None:
        """After the data ends, the desk stays open: let market time pass with wall time
        (the market frozen as it last was) so latency-delayed and resting orders still
        resolve against the last book."""
        engine, clock = self.engine, self.clock
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.1)
            now = time.perf_counter()
            clock.advance(clock.now_ns() + int((now - last) * NS_PER_S))
            last = now
            engine.run_commands()
            engine.orders.housekeeping(clock.now_ns())

    def _finish(self) -> None:
        if self.lines and not self.parser.stats.parsed:
            self.warn(f"no market data in {', '.join(str(p) for p in self.paths)}: {self.lines} lines read, "
                      "none of them a trade, depth or ticker message")
        self.done = True
        self.engine.replay_info.update(progress=self.lines, done=True)
        self.engine.feed_info["parser"] = self.parser.stats.as_dict()


def _speed_label(speed: float | None) -> str:
    if speed is None:
        return "max"
    return f"{speed:g}"

"""Price charts drawn with plotext: the main chart (executed trades only) and the 1-second
chart (every signal, executed or not).

A plotext redraw costs tens of milliseconds (BENCH.md), so a chart redraws only when its
data changed in a way that matters: a new bar, a new marker, or a resize. The forming
bar alone redraws at most every ``open_bar_interval_s``; every redraw is at most every
``min_interval_s``. The header always carries the live price, so the chart may lag a
forming bar by a few seconds without misleading anyone.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Hashable, Sequence
from typing import Any

import plotext as plt
from plotext._primitives.pixel import pixel
from rich.text import Text
from textual.widgets import Static

from engine.core.snapshot import Candle, DeskSnapshot, Marker
from tui.format import hms

TF_NS = {
    "1s": 1_000_000_000,
    "1m": 60_000_000_000,
    "5m": 300_000_000_000,
    "15m": 900_000_000_000,
    "1h": 3_600_000_000_000,
}

# Grey axes on the terminal's own background: the canvas draws no background colour,
# so the chart sits on the desk's theme instead of a white plotext box.
plt.add_theme("tradedesk", text=pixel(foreground=245), sequence=[12])

BUY_SOLID, SELL_SOLID = "▲", "▼"
BUY_HOLLOW, SELL_HOLLOW = "△", "▽"
GLYPHS = {(True, True): BUY_SOLID, (False, True): SELL_SOLID, (True, False): BUY_HOLLOW, (False, False): SELL_HOLLOW}
GREEN, RED = 10, 9  # bright green / red: stand out from the candle bodies (2 / 1)
BOTH = 11  # yellow: a buy and a sell in the same cell


class PlotextChart(Static):
    """A Static that shows one plotext figure and redraws it only when asked to by data."""

    #: Least time between two redraws, whatever changed.
    min_interval_s = 1.0
    #: Least time between redraws caused only by the forming bar moving.
    open_bar_interval_s = 5.0

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes)
        self._hard: Hashable = None
        self._soft: Hashable = None
        self._drawn_size: tuple[int, int] = (0, 0)
        self._last_draw = 0.0
        self._args: tuple[Any, ...] | None = None
        self.draws = 0
        self.draw_s = 0.0
        self.last_plain = ""  # the last drawing as plain text (tests, screen readers)

    def offer(self, hard: Hashable, soft: Hashable, *args: Any) -> None:
        """Consider redrawing with new data; ``hard`` changes (new bar, marker) redraw
        within ``min_interval_s``, ``soft`` changes (forming bar) within ``open_bar_interval_s``."""
        self._args = args
        size = (self.content_size.width, self.content_size.height)
        now = time.monotonic()
        since = now - self._last_draw
        if size != self._drawn_size:
            due = True
        elif hard != self._hard:
            due = since >= self.min_interval_s
        elif soft != self._soft:
            due = since >= self.open_bar_interval_s
        else:
            due = False
        if due:
            self._hard, self._soft = hard, soft
            self._draw()

    def on_resize(self) -> None:
        if self._args is not None:
            self._draw()

    def _draw(self) -> None:
        w, h = self.content_size.width, self.content_size.height
        self._drawn_size = (w, h)
        if self._args is None or w < 20 or h < 5:
            return
        t0 = time.perf_counter()
        out = self.render_chart(w, h, *self._args)
        self.last_plain = out.plain
        self.update(out, layout=False)  # the chart's size comes from the layout, not its content
        self._last_draw = time.monotonic()
        self.draws += 1
        self.draw_s += time.perf_counter() - t0

    def render_chart(self, width: int, height: int, *args: Any) -> Text:  # pragma: no cover - abstract
        raise NotImplementedError


def _x_ticks(times: Sequence[int], width: int, seconds: bool) -> tuple[list[int], list[str]]:
    n = len(times)
    if n == 0:
        return [], []
    count = max(2, min(n, width // 12))
    idx = sorted({round(i * (n - 1) / (count - 1)) for i in range(count)}) if n > 1 else [0]
    return idx, [hms(times[i], seconds) for i in idx]


def _marker_points(markers: Sequence[Marker], starts: Sequence[int], tf_ns: int) -> list[tuple[int, Marker]]:
    """Map markers onto bar indices; markers older than the first bar shown are dropped."""
    if not starts:
        return []
    first, out = starts[0], []
    end = starts[-1] + tf_ns
    # Bars are contiguous only when every period traded; find each marker's bar by search.
    for m in markers:
        if m.ts < first or m.ts >= end:
            continue
        i = bisect.bisect_right(starts, m.ts) - 1
        out.append((i, m))
    return out


def _figure(width: int, height: int) -> Any:
    fig = plt.figure
    fig.clear()
    fig.plot_size(width, height)
    fig.theme("tradedesk")
    return fig


def _draw_markers(fig: Any, points: list[tuple[int, Marker]], hollow_unexecuted: bool,
                  y_step: float) -> None:
    """Draw markers; a buy and a sell that fall on the same cell show as one ◆ (both),
    so neither hides the other."""
    columns: dict[int, list[Marker]] = {}
    for i, m in points:
        columns.setdefault(i, []).append(m)
    cells: list[tuple[int, list[Marker]]] = []
    for i, ms in columns.items():
        # Markers of one bar closer than a row apart share a cell: cluster them by price
        # (a fixed price grid would split neighbours that straddle a row boundary).
        ms.sort(key=lambda m: m.price)
        group = [ms[0]]
        for m in ms[1:]:
            if m.price - group[-1].price <= y_step:
                group.append(m)
            else:
                cells.append((i, group))
                group = [m]
        cells.append((i, group))
    for i, ms in cells:
        sides = {m.side for m in ms}
        executed = any(m.executed for m in ms) or not hollow_unexecuted
        price = ms[-1].price
        if len(sides) > 1:
            glyph, color = ("◆" if executed else "◇"), BOTH
        else:
            buy = "BUY" in sides
            glyph = GLYPHS[(buy, executed)]
            color = GREEN if buy else RED
        px = pixel(foreground=color, style="bold") if executed else pixel(foreground=color)
        fig.draw(fig.signal([i], [price], marker=plt.marker(glyph, px)))


def _y_step(lows: Sequence[float], highs: Sequence[float], height: int) -> float:
    """Price per character row of the plot area (frame and x labels take 3 rows)."""
    return (max(highs) - min(lows)) / max(height - 3, 1)


class PriceChart(PlotextChart):
    """Main chart: candles of the chart timeframe with executed trades only (fills)."""

    def show(self, snap: DeskSnapshot) -> None:
        candles = snap.candles
        if not candles:
            self._args = None
            self._hard = None
            self.update(Text(f"waiting for the first {snap.chart_tf} bar (no trades seen yet)", style="dim"))
            return
        last = candles[-1]
        fills = snap.fill_markers
        hard = (snap.chart_tf, len(candles), candles[0].open_time, last.open_time, len(fills),
                fills[-1].ts if fills else 0)
        soft = (last.close, last.high, last.low)
        self.offer(hard, soft, candles, fills, snap.chart_tf)

    def render_chart(self, width: int, height: int, *args: Any) -> Text:
        candles: tuple[Candle, ...] = args[0]
        fills: tuple[Marker, ...] = args[1]
        tf: str = args[2]
        # Each candle needs about two columns to stay readable; keep the newest that fit.
        keep = max(2, (width - 12) // 2)
        candles = candles[-keep:]
        xs = list(range(len(candles)))
        starts = [c.open_time for c in candles]
        fig = _figure(width, height)
        fig.draw(fig.candlestick({
            "date": xs,
            "open": [c.open for c in candles],
            "high": [c.high for c in candles],
            "low": [c.low for c in candles],
            "close": [c.close for c in candles],
        }))
        step = _y_step([c.low for c in candles], [c.high for c in candles], height)
        _draw_markers(fig, _marker_points(fills, starts, TF_NS.get(tf, 60_000_000_000)), False, step)
        pos, labels = _x_ticks(starts, width, seconds=tf == "1s")
        fig.ruler("x").ticks(pos, labels)
        fig.ruler("x").lim(-0.5, max(len(candles) - 0.5, 1.5))
        return Text.from_ansi(fig.build().string(), no_wrap=True, end="")


class SecondsChart(PlotextChart):
    """1-second close line with every signal: solid when executed, hollow when not."""

    def show(self, snap: DeskSnapshot) -> None:
        secs = snap.seconds
        if len(secs) < 2:
            self._args = None
            self._hard = None
            self.update(Text("waiting for the first 1s bars", style="dim"))
            return
        sigs = snap.signal_markers
        hard = (len(secs), secs[-1].open_time, len(sigs), sigs[-1].ts if sigs else 0)
        self.offer(hard, secs[-1].close, secs, sigs)

    def render_chart(self, width: int, height: int, *args: Any) -> Text:
        secs: tuple[Candle, ...] = args[0]
        sigs: tuple[Marker, ...] = args[1]
        secs = secs[-max(2, width - 10):]
        xs = list(range(len(secs)))
        starts = [c.open_time for c in secs]
        fig = _figure(width, height)
        line = fig.signal(xs, [c.close for c in secs], marker="braille")
        line.lines()
        fig.draw(line)
        closes = [c.close for c in secs]
        _draw_markers(fig, _marker_points(sigs, starts, TF_NS["1s"]), True, _y_step(closes, closes, height))
        pos, labels = _x_ticks(starts, width, seconds=True)
        fig.ruler("x").ticks(pos, labels)
        return Text.from_ansi(fig.build().string(), no_wrap=True, end="")

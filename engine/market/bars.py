"""Tick cache and multi-timeframe bars built from trades by exchange trade time.

A bar's open time is the trade time floored to the timeframe. A bar closes when a
trade lands in a later bucket, or when market time (any exchange-stamped event) has
passed its end by the close grace, so quiet markets still close bars. Empty buckets
produce no bar.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from engine.core.events import NS_PER_S, Bar, Trade
from engine.market.features import TradeFlow
from models.common.schema import TIMEFRAMES


@dataclass(slots=True)
class _OpenBar:
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    buy_volume: Decimal
    trades: int

    def freeze(self, symbol: str, tf: str) -> Bar:
        return Bar(symbol, tf, self.open_time, self.open, self.high, self.low, self.close,
                   self.volume, self.buy_volume, self.trades)


_ZERO = Decimal(0)


class TickCache:
    """The last ``horizon_s`` seconds of trades as small tuples (ts_ns, price, qty, taker_buy)."""

    def __init__(self, horizon_s: float = 900.0, max_ticks: int = 500_000) -> None:
        self.horizon_ns = int(horizon_s * NS_PER_S)
        self.ticks: deque[tuple[int, float, float, bool]] = deque(maxlen=max_ticks)
        self.flow = TradeFlow()  # buy/sell flow over the last minute, for the COB features

    def add(self, t: Trade) -> None:
        tick = (t.ts_event, float(t.price), float(t.qty), not t.buyer_is_maker)
        self.ticks.append(tick)
        self.flow.add(tick[0], tick[2], tick[3])
        cutoff = t.ts_event - self.horizon_ns
        ticks = self.ticks
        while ticks and ticks[0][0] < cutoff:
            ticks.popleft()

    def since(self, ts_ns: int) -> list[tuple[int, float, float, bool]]:
        out = []
        for tick in reversed(self.ticks):
            if tick[0] < ts_ns:
                break
            out.append(tick)
        out.reverse()
        return out


class BarBuilder:
    """Bars for every timeframe of one symbol; ``on_close(bar)`` is called on each close.

    When the timeframes are nested (ascending, each a multiple of the first, as
    ``TIMEFRAMES`` are), a trade updates only the finest open bar; that bar is folded
    into the coarser open bars when it closes. The bars, their close order and the
    late-trade count are the same as updating every timeframe on every trade, at about
    one seventh of the Decimal arithmetic. ``current[tf]`` for a coarser timeframe then
    holds what has been folded so far; use :meth:`all_bars` for the live view.
    """

    def __init__(
        self,
        symbol: str,
        timeframes: Iterable[str] = TIMEFRAMES,
        on_close: Callable[[Bar], None] | None = None,
        close_grace_ns: int = NS_PER_S,
        history: int = 2000,
    ) -> None:
        self.symbol = symbol
        self.tfs = [(tf, TIMEFRAMES[tf] * NS_PER_S) for tf in timeframes]
        self.current: dict[str, _OpenBar | None] = {tf: None for tf, _ in self.tfs}
        self.closed: dict[str, deque[Bar]] = {tf: deque(maxlen=history) for tf, _ in self.tfs}
        self.counts: dict[str, int] = {tf: 0 for tf, _ in self.tfs}
        self.on_close = on_close
        self.grace = close_grace_ns
        self.late_trades = 0
        widths = [w for _, w in self.tfs]
        self._nested = bool(widths) and all(
            w % widths[0] == 0 and (i == 0 or w >= widths[i - 1]) for i, w in enumerate(widths))
        self._fine_tf, self._fine_w = self.tfs[0] if self.tfs else ("", 0)
        self._fine: _OpenBar | None = None  # == current[fine tf] (nested mode)

    def add_trade(self, t: Trade) -> None:
        f = self._fine
        ts = t.ts_event
        if f is not None and f.open_time <= ts < f.open_time + self._fine_w:
            # The common case: same finest bucket, nothing closes.
            price, qty = t.price, t.qty
            if price > f.high:
                f.high = price
            elif price < f.low:
                f.low = price
            f.close = price
            f.volume += qty
            f.buy_volume += qty if not t.buyer_is_maker else _ZERO
            f.trades += 1
            return
        if self._nested:
            self._add_nested(t)
        else:
            self._add_each(t)

    def _add_nested(self, t: Trade) -> None:
        ts, price, qty = t.ts_event, t.price, t.qty
        buy = qty if not t.buyer_is_maker else _ZERO
        current = self.current
        fine_tf, fw = self._fine_tf, self._fine_w
        f = self._fine
        bucket = ts - ts % fw
        if f is not None and bucket < f.open_time:
            # Trade time went backwards across a bucket edge: keep it in the open bars
            # (never reopen a closed one) and count it once per timeframe, as before.
            for tf, width in self.tfs:
                bar = current[tf]
                if bar is not None and ts - ts % width < bar.open_time:
                    self.late_trades += 1
            if price > f.high:
                f.high = price
            elif price < f.low:
                f.low = price
            f.close = price
            f.volume += qty
            f.buy_volume += buy
            f.trades += 1
            return
        if f is not None:
            self._close_fine(f)
        self._fine = current[fine_tf] = _OpenBar(bucket, price, price, price, price, qty, buy, 1)
        for tf, width in self.tfs[1:]:
            cb = ts - ts % width
            bar = current[tf]
            if bar is None or cb > bar.open_time:
                if bar is not None:
                    self._close(tf, bar)
                # Empty until the finest bar folds in (trades == 0 marks it).
                current[tf] = _OpenBar(cb, price, price, price, price, _ZERO, _ZERO, 0)
            elif cb < bar.open_time:
                self.late_trades += 1

    def _close_fine(self, f: _OpenBar) -> None:
        """Fold the finest bar into every coarser open bar, then close it."""
        current = self.current
        for tf, _ in self.tfs[1:]:
            c = current[tf]
            if c is None:
                continue
            if not c.trades:
                c.open, c.high, c.low = f.open, f.high, f.low
                c.volume, c.buy_volume = f.volume, f.buy_volume
            else:
                if f.high > c.high:
                    c.high = f.high
                if f.low < c.low:
                    c.low = f.low
                c.volume += f.volume
                c.buy_volume += f.buy_volume
            c.close = f.close
            c.trades += f.trades
        self._close(self._fine_tf, f)

    def _add_each(self, t: Trade) -> None:
        """Timeframes that do not nest: every open bar takes every trade."""
        ts, price, qty = t.ts_event, t.price, t.qty
        buy = qty if not t.buyer_is_maker else _ZERO
        current = self.current
        for tf, width in self.tfs:
            bucket = ts - ts % width
            bar = current[tf]
            if bar is None or bucket > bar.open_time:
                if bar is not None:
                    self._close(tf, bar)
                current[tf] = _OpenBar(bucket, price, price, price, price, qty, buy, 1)
                continue
            if bucket < bar.open_time:
                self.late_trades += 1
            if price > bar.high:
                bar.high = price
            elif price < bar.low:
                bar.low = price
            bar.close = price
            bar.volume += qty
            bar.buy_volume += buy
            bar.trades += 1
        self._fine = current[self._fine_tf] if self._nested else None

    def advance(self, ts_event: int) -> None:
        """Close bars whose end plus the grace is before ``ts_event``."""
        f = self._fine
        if f is not None and ts_event < f.open_time + self._fine_w + self.grace:
            return  # the finest bar is still open, so every coarser one is too
        grace = self.grace
        current = self.current
        for tf, width in self.tfs:
            bar = current[tf]
            if bar is not None and ts_event >= bar.open_time + width + grace:
                if self._nested and bar is f:
                    self._close_fine(bar)
                    self._fine = None
                else:
                    self._close(tf, bar)
                current[tf] = None

    def _close(self, tf: str, ob: _OpenBar) -> None:
        bar = ob.freeze(self.symbol, tf)
        self.closed[tf].append(bar)
        self.counts[tf] += 1
        if self.on_close:
            self.on_close(bar)

    def seed(self, bars: Iterable[Bar]) -> None:
        """Load back-filled history (REST klines) without calling ``on_close``."""
        for bar in bars:
            self.closed[bar.timeframe].append(bar)

    def _open_view(self, tf: str) -> _OpenBar | None:
        """The open bar of ``tf`` with the unfolded finest bar merged in (nested mode)."""
        cur = self.current[tf]
        f = self._fine
        if cur is None or f is None or cur is f or not self._nested:
            return cur
        if not cur.trades:
            return _OpenBar(cur.open_time, f.open, f.high, f.low, f.close, f.volume, f.buy_volume, f.trades)
        return _OpenBar(cur.open_time, cur.open, max(cur.high, f.high), min(cur.low, f.low), f.close,
                        cur.volume + f.volume, cur.buy_volume + f.buy_volume, cur.trades + f.trades)

    def all_bars(self, tf: str, include_open: bool = True) -> list[Bar]:
        out = list(self.closed[tf])
        cur = self._open_view(tf)
        if include_open and cur is not None:
            out.append(cur.freeze(self.symbol, tf))
        return out

    def last_price(self) -> Decimal | None:
        for tf, _ in self.tfs:
            cur = self._open_view(tf)
            if cur is not None:
                return cur.close
        return None

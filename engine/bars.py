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

from engine.events import NS_PER_S, Bar, Trade
from models.schema import TIMEFRAMES


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


class TickCache:
    """The last ``horizon_s`` seconds of trades as small tuples (ts_ns, price, qty, taker_buy)."""

    def __init__(self, horizon_s: float = 900.0, max_ticks: int = 500_000) -> None:
        self.horizon_ns = int(horizon_s * NS_PER_S)
        self.ticks: deque[tuple[int, float, float, bool]] = deque(maxlen=max_ticks)

    def add(self, t: Trade) -> None:
        self.ticks.append((t.ts_event, float(t.price), float(t.qty), not t.buyer_is_maker))
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
    """Bars for every timeframe of one symbol; ``on_close(bar)`` is called on each close."""

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

    def add_trade(self, t: Trade) -> None:
        ts, price, qty = t.ts_event, t.price, t.qty
        buy = qty if not t.buyer_is_maker else Decimal(0)
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
                # Trade time went backwards across a bucket edge: keep it in the open bar
                # (never reopen a closed one) and count it.
                self.late_trades += 1
            if price > bar.high:
                bar.high = price
            elif price < bar.low:
                bar.low = price
            bar.close = price
            bar.volume += qty
            bar.buy_volume += buy
            bar.trades += 1

    def advance(self, ts_event: int) -> None:
        """Close bars whose end plus the grace is before ``ts_event``."""
        for tf, width in self.tfs:
            bar = self.current[tf]
            if bar is not None and ts_event >= bar.open_time + width + self.grace:
                self._close(tf, bar)
                self.current[tf] = None

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

    def all_bars(self, tf: str, include_open: bool = True) -> list[Bar]:
        out = list(self.closed[tf])
        cur = self.current[tf]
        if include_open and cur is not None:
            out.append(cur.freeze(self.symbol, tf))
        return out

    def last_price(self) -> Decimal | None:
        for tf, _ in self.tfs:
            cur = self.current[tf]
            if cur is not None:
                return cur.close
        return None

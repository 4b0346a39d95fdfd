"""Incremental bar indicators and order-book / trade-flow features.

Bar features are computed once per bar close from that bar and earlier ones only:
nothing here can see the future. Order-book features are computed when a model asks
(every decision / COB tick), never per message.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from engine.core.events import NS_PER_S, Bar, Level
from models.common.schema import (
    BAR_FEATURES,
    COB_EXTRA,
    COB_LEVELS,
    N_BAR_FEATURES,
    TIMEFRAMES,
    WINDOW,
)


class _Rolling:
    """Mean and standard deviation over the last ``n`` values."""

    __slots__ = ("n", "s", "ss", "vals")

    def __init__(self, n: int) -> None:
        self.n = n
        self.vals: deque[float] = deque()
        self.s = 0.0
        self.ss = 0.0

    def push(self, x: float) -> None:
        self.vals.append(x)
        self.s += x
        self.ss += x * x
        if len(self.vals) > self.n:
            old = self.vals.popleft()
            self.s -= old
            self.ss -= old * old

    @property
    def full(self) -> bool:
        return len(self.vals) >= self.n

    def mean(self) -> float:
        return self.s / len(self.vals) if self.vals else 0.0

    def std(self) -> float:
        k = len(self.vals)
        if k < 2:
            return 0.0
        var = max(self.ss / k - (self.s / k) ** 2, 0.0)
        return math.sqrt(var)

    def z(self, x: float) -> float:
        sd = self.std()
        return (x - self.mean()) / sd if sd > 1e-12 else 0.0


class _Ema:
    __slots__ = ("alpha", "value")

    def __init__(self, span: int) -> None:
        self.alpha = 2.0 / (span + 1)
        self.value: float | None = None

    def push(self, x: float) -> float:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)
        return self.value


class BarFeatures:
    """Indicator state for one symbol and timeframe, plus a ring of feature rows."""

    def __init__(self, capacity: int = 4 * WINDOW) -> None:
        self.prev_close: float | None = None
        self.sma20 = _Rolling(20)
        self.sma50 = _Rolling(50)
        self.ema12, self.ema26, self.signal = _Ema(12), _Ema(26), _Ema(9)
        self.rsi_n = 14
        self.avg_gain = 0.0
        self.avg_loss = 0.0
        self.changes = 0
        self.highs: deque[float] = deque(maxlen=14)
        self.lows: deque[float] = deque(maxlen=14)
        self.vol = _Rolling(20)
        self.trades = _Rolling(20)
        self.rows = np.zeros((capacity, N_BAR_FEATURES), dtype=np.float32)
        self.close_times = np.zeros(capacity, dtype=np.int64)  # when each row's bar closed (its end), ns
        self.count = 0  # bars seen
        self.last: dict[str, float] = {}

    def update(self, bar: Bar) -> np.ndarray:
        close, high, low, opn = float(bar.close), float(bar.high), float(bar.low), float(bar.open)
        volume = float(bar.volume)
        ret = math.log(close / self.prev_close) if self.prev_close else 0.0
        # RSI (Wilder): seed with the simple mean of the first 14 changes.
        if self.prev_close is not None:
            change = close - self.prev_close
            gain, loss = max(change, 0.0), max(-change, 0.0)
            self.changes += 1
            n = self.rsi_n
            if self.changes <= n:
                self.avg_gain += gain / n
                self.avg_loss += loss / n
            else:
                self.avg_gain = (self.avg_gain * (n - 1) + gain) / n
                self.avg_loss = (self.avg_loss * (n - 1) + loss) / n
        if self.changes >= self.rsi_n:
            rsi = 100.0 if self.avg_loss == 0 else 100.0 - 100.0 / (1.0 + self.avg_gain / self.avg_loss)
        else:
            rsi = 50.0
        self.prev_close = close
        self.sma20.push(close)
        self.sma50.push(close)
        macd = self.ema12.push(close) - self.ema26.push(close)
        sig = self.signal.push(macd)
        self.highs.append(high)
        self.lows.append(low)
        hh, ll = max(self.highs), min(self.lows)
        willr = -100.0 * (hh - close) / (hh - ll) if hh > ll else -50.0
        mean20, sd20 = self.sma20.mean(), self.sma20.std()
        pctb = (close - (mean20 - 2 * sd20)) / (4 * sd20) if sd20 > 1e-12 else 0.5
        vol_z = self.vol.z(volume) if len(self.vol.vals) >= 2 else 0.0
        trades_z = self.trades.z(float(bar.trades)) if len(self.trades.vals) >= 2 else 0.0
        self.vol.push(volume)
        self.trades.push(float(bar.trades))
        buy_ratio = float(bar.buy_volume) / volume if volume > 0 else 0.5
        values = {
            "ret_1": ret,
            "range": (high - low) / close,
            "body": (close - opn) / close,
            "sma20_dev": close / mean20 - 1.0 if mean20 else 0.0,
            "sma50_dev": close / self.sma50.mean() - 1.0 if self.sma50.vals else 0.0,
            "rsi14": rsi / 100.0 - 0.5,
            "macd": macd / close,
            "macd_signal": sig / close,
            "macd_hist": (macd - sig) / close,
            "bb_pctb": pctb - 0.5,
            "willr14": willr / 100.0 + 0.5,
            "vol_z": vol_z,
            "buy_ratio": buy_ratio - 0.5,
            "trades_z": trades_z,
        }
        self.last = {"close": close, "sma20": mean20, "sma50": self.sma50.mean(), "rsi14": rsi,
                     "macd": macd, "macd_signal": sig, "bb_pctb": pctb, "willr14": willr}
        row = np.array([values[k] for k in BAR_FEATURES], dtype=np.float32)
        np.clip(row, -10.0, 10.0, out=row)  # z-scores of a first big bar can be huge
        self.rows[self.count % len(self.rows)] = row
        self.close_times[self.count % len(self.rows)] = bar.open_time + self.width_ns(bar)
        self.count += 1
        return row

    @staticmethod
    def width_ns(bar: Bar) -> int:
        return TIMEFRAMES[bar.timeframe] * NS_PER_S

    def window(self, n: int = WINDOW) -> np.ndarray:
        """The last ``n`` rows, oldest first, left-padded with zeros while warming up."""
        return self._window_ending(self.count, n)

    def count_at(self, t_ns: int) -> int:
        """How many bars had closed by ``t_ns`` (as far back as the ring remembers; -1 if further)."""
        cap = len(self.rows)
        oldest = max(0, self.count - cap)
        k = self.count
        while k > oldest and self.close_times[(k - 1) % cap] > t_ns:
            k -= 1
        if k == oldest and oldest > 0 and self.close_times[oldest % cap] > t_ns:
            return -1
        return k

    def window_at(self, t_ns: int, n: int = WINDOW) -> tuple[np.ndarray, int] | None:
        """The window as it was at ``t_ns`` and the bar count then; None once the ring has
        overwritten that past."""
        k = self.count_at(t_ns)
        if k < 0 or self.count - k + min(n, k) > len(self.rows):
            return None
        return self._window_ending(k, n), k

    def _window_ending(self, end: int, n: int) -> np.ndarray:
        out = np.zeros((n, N_BAR_FEATURES), dtype=np.float32)
        cap = len(self.rows)
        k = min(n, end, cap)  # never read a slot the ring has already overwritten
        for i in range(k):
            out[n - k + i] = self.rows[(end - k + i) % cap]
        return out


FloatLevel = tuple[float, float]


def _imbalance(bids: Sequence[FloatLevel], asks: Sequence[FloatLevel], depth: int) -> float:
    b = sum(q for _, q in bids[:depth])
    a = sum(q for _, q in asks[:depth])
    return (b - a) / (b + a) if b + a > 0 else 0.0


def _slope(levels: Sequence[FloatLevel], mid: float) -> float:
    """Depth slope: log of the side's top-N size per basis point of price it spans."""
    if len(levels) < 2:
        return 0.0
    total = sum(q for _, q in levels)
    span_bps = abs(levels[-1][0] - mid) / mid * 1e4
    return math.log1p(total / span_bps) if span_bps > 0 else 0.0


FLOW_WINDOWS_S = (1, 5, 30, 60)  # flows over 1/5/30 s, trade counts over 5/60 s
_QTY_UNITS = 10**8  # quantities as integers of 1e-8 (Binance's finest step): sums never drift
_FLOW_SLACK_NS = 10 * NS_PER_S  # trades kept past their window, for a query clock a little behind


class FlowStats(NamedTuple):
    """Taker buy and sell volume and trade counts per window of :data:`FLOW_WINDOWS_S`."""

    buy: tuple[float, ...]
    sell: tuple[float, ...]
    trades: tuple[int, ...]


def flow_stats(trades: Sequence[tuple[int, float, float, bool]], now_ns: int) -> FlowStats:
    """The reference computation over ``(ts_ns, price, qty, taker_buy)`` ticks in time order."""
    k = len(FLOW_WINDOWS_S)
    cut = [now_ns - w * NS_PER_S for w in FLOW_WINDOWS_S]
    buy, sell, count = [0] * k, [0] * k, [0] * k
    for ts, _, q, taker_buy in reversed(trades):
        if ts < cut[-1]:
            break
        iq = round(q * _QTY_UNITS)
        for i in range(k):
            if ts >= cut[i]:
                count[i] += 1
                if taker_buy:
                    buy[i] += iq
                else:
                    sell[i] += iq
    return FlowStats(tuple(b / _QTY_UNITS for b in buy), tuple(x / _QTY_UNITS for x in sell), tuple(count))


class TradeFlow:
    """:func:`flow_stats` kept incrementally: O(1) per trade and per query.

    The tick cache holds 15 minutes of trades; scanning its last minute on every COB
    tick was the replay's largest cost. Each window keeps its own queue of trades and
    integer sums. Queries are expected at a clock that does not go back by more than
    ``_FLOW_SLACK_NS``; a trade that has left a window does not come back into it.
    """

    __slots__ = ("_buy", "_queues", "_sell", "_spans")

    def __init__(self) -> None:
        self._spans = [w * NS_PER_S for w in FLOW_WINDOWS_S]
        self._queues: list[deque[tuple[int, int, bool]]] = [deque() for _ in FLOW_WINDOWS_S]
        self._buy = [0] * len(FLOW_WINDOWS_S)
        self._sell = [0] * len(FLOW_WINDOWS_S)

    def add(self, ts_ns: int, qty: float, taker_buy: bool) -> None:
        item = (ts_ns, round(qty * _QTY_UNITS), taker_buy)
        sums = self._buy if taker_buy else self._sell
        for i, q in enumerate(self._queues):
            q.append(item)
            sums[i] += item[1]
        self._expire(ts_ns - _FLOW_SLACK_NS)  # bounded even when nobody asks

    def _expire(self, now_ns: int) -> None:
        for i, q in enumerate(self._queues):
            cutoff = now_ns - self._spans[i]
            while q and q[0][0] < cutoff:
                _, iq, taker_buy = q.popleft()
                if taker_buy:
                    self._buy[i] -= iq
                else:
                    self._sell[i] -= iq

    def stats(self, now_ns: int) -> FlowStats:
        self._expire(now_ns)
        return FlowStats(tuple(b / _QTY_UNITS for b in self._buy), tuple(x / _QTY_UNITS for x in self._sell),
                         tuple(len(q) for q in self._queues))


def book_features(bids: Sequence[Level], asks: Sequence[Level], flow: FlowStats) -> np.ndarray:
    """COB model input: top-N levels a side (offset bps, size share) + COB_EXTRA."""
    n = COB_LEVELS
    out = np.zeros(2 * n * 2 + len(COB_EXTRA), dtype=np.float32)
    if not bids or not asks:
        return out
    fb = [(float(p), float(q)) for p, q in bids[:n]]  # floats once; the book keeps Decimals
    fa = [(float(p), float(q)) for p, q in asks[:n]]
    bb, ba = fb[0][0], fa[0][0]
    mid = (bb + ba) / 2
    for levels, base in ((fb, 0), (fa, 2 * n)):
        total = sum(q for _, q in levels) or 1.0
        for i, (p, q) in enumerate(levels):
            out[base + 2 * i] = (p - mid) / mid * 1e4
            out[base + 2 * i + 1] = q / total
    bq, aq = fb[0][1], fa[0][1]
    micro = (bb * aq + ba * bq) / (bq + aq) if bq + aq > 0 else mid

    def imbalance(i: int) -> float:
        b, s = flow.buy[i], flow.sell[i]
        return (b - s) / (b + s) if b + s > 0 else 0.0

    rate5, rate60 = flow.trades[1] / 5.0, flow.trades[3] / 60.0
    extra = {
        "spread_bps": (ba - bb) / mid * 1e4,
        "imbalance_1": _imbalance(fb, fa, 1),
        "imbalance_5": _imbalance(fb, fa, 5),
        "imbalance_10": _imbalance(fb, fa, 10),
        "imbalance_20": _imbalance(fb, fa, 20),
        "microprice_bps": (micro - mid) / mid * 1e4,
        "bid_slope": _slope(fb, mid),
        "ask_slope": _slope(fa, mid),
        "flow_1s": imbalance(0),
        "flow_5s": imbalance(1),
        "flow_30s": imbalance(2),
        "trade_rate_z": (rate5 - rate60) / math.sqrt(rate60) if rate60 > 0 else 0.0,
    }
    out[4 * n:] = [extra[k] for k in COB_EXTRA]
    np.clip(out, -1e4, 1e4, out=out)
    return out

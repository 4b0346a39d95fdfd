"""Baselines for a backtest, on the same data, fills, fees and sizes as the models:

- **flat**: no trades, 0.
- **buy and hold**: buy the order size of the primary symbol at the first tradable mark of
  the window, hold it to the end, marked at the last mid (its entry fee paid).
- **random**: ``runs`` seeded draws of a policy that makes the same number of trades as
  the models, each lasting one of the models' own hold durations (shuffled), at random
  times and on a random side (BUY only when shorting is off), ending with an open position
  of the same age when the models ended with one.

Every fill walks the book as it was recorded at that second (:class:`Tape`), for the
order size at that moment, and pays the taker fee on each side, exactly as the paper
venue charges. A report states where the models rank among the random draws.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class TapePoint:
    """The primary's book at one mark: its mid, and the prices an order of ``qty`` would fill at."""

    ts: int  # ns, market time
    mid: Decimal
    qty: Decimal  # the order size then (order notional / mid, rounded to the step)
    buy_px: Decimal  # VWAP of a market BUY of qty walking the asks
    sell_px: Decimal  # VWAP of a market SELL of qty walking the bids


@dataclass
class Tape:
    """Marks of the primary's book, one a second while the book is LIVE, oldest first."""

    fee_rate: Decimal
    allow_short: bool
    points: list[TapePoint] = field(default_factory=list)
    _times: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._times = [p.ts for p in self.points]

    def add(self, point: TapePoint) -> None:
        if self.points and point.ts <= self.points[-1].ts:
            return
        self.points.append(point)
        self._times.append(point.ts)

    def window(self, start_ns: int | None, end_ns: int | None) -> Tape:
        pts = [p for p in self.points if (start_ns is None or p.ts >= start_ns) and (end_ns is None or p.ts < end_ns)]
        return Tape(self.fee_rate, self.allow_short, pts)

    def index_at(self, ts: int) -> int:
        """The first mark at or after ``ts`` (the last one if there is none)."""
        return min(bisect_left(self._times, ts), len(self.points) - 1)


@dataclass(frozen=True, slots=True)
class Trades:
    """What the random policy copies from the models: hold durations, and the age of a
    position still open at the end (None when they ended flat)."""

    durations_ns: tuple[int, ...]
    open_age_ns: int | None = None

    @property
    def count(self) -> int:
        return len(self.durations_ns) + (self.open_age_ns is not None)


def _trade_pnl(tape: Tape, side: int, e: int, x: int | None) -> Decimal:
    """Net PnL of one trade entered at mark ``e`` and closed at mark ``x`` (None: still open,
    marked at the last mid), with the taker fee on every fill."""
    p_in = tape.points[e]
    qty = p_in.qty
    entry = p_in.buy_px if side > 0 else p_in.sell_px
    fee = tape.fee_rate * entry * qty
    if x is None:
        last = tape.points[-1].mid
        return (last - entry) * qty * side - fee
    p_out = tape.points[x]
    exit_ = p_out.sell_px if side > 0 else p_out.buy_px
    fee += tape.fee_rate * exit_ * qty
    return (exit_ - entry) * qty * side - fee


def flat() -> dict[str, str]:
    return {"net_pnl": "0"}


def buy_and_hold(tape: Tape) -> dict[str, str | int | None]:
    """Buy the order size at the first mark, hold to the end, marked at the last mid."""
    if not tape.points:
        return {"net_pnl": "0", "entry_ts": None, "note": "no tradable mark in the window"}
    pnl = _trade_pnl(tape, 1, 0, None)
    p0 = tape.points[0]
    return {"net_pnl": str(pnl), "entry_ts": p0.ts, "entry_price": str(p0.buy_px), "qty": str(p0.qty),
            "last_mid": str(tape.points[-1].mid)}


def random_draws(tape: Tape, trades: Trades, runs: int, seed: int) -> np.ndarray:
    """Net PnL of ``runs`` random policies with the models' trades (float, quote currency)."""
    out = np.zeros(runs, dtype=np.float64)
    n_points = len(tape.points)
    if trades.count == 0 or n_points < 2:
        return out
    rng = np.random.default_rng(seed)
    t0, t1 = tape.points[0].ts, tape.points[-1].ts
    span = t1 - t0
    durs = np.asarray(trades.durations_ns, dtype=np.float64)
    open_age = float(trades.open_age_ns) if trades.open_age_ns is not None else None
    for r in range(runs):
        d = rng.permutation(durs) if len(durs) else durs
        busy = float(d.sum()) + (open_age or 0.0)
        scale = min(1.0, span / busy) if busy > 0 else 1.0  # more holding than the window: shrink
        d = d * scale
        age = open_age * scale if open_age is not None else None
        free = max(0.0, span - float(d.sum()) - (age or 0.0))
        gaps = rng.dirichlet(np.ones(len(d) + 1)) * free if len(d) else np.array([free])
        sides = rng.choice([-1, 1], size=len(d) + 1) if tape.allow_short else np.ones(len(d) + 1, dtype=int)
        t = float(t0)
        total = ZERO
        for i, di in enumerate(d):
            t += gaps[i]
            e = tape.index_at(int(t))
            t += di
            x = tape.index_at(int(t))
            if x > e:
                total += _trade_pnl(tape, int(sides[i]), e, x)
        if age is not None:
            e = tape.index_at(int(t1 - age))
            total += _trade_pnl(tape, int(sides[-1]), e, None)
        out[r] = float(total)
    return out


def random_summary(draws: np.ndarray) -> dict[str, object]:
    if len(draws) == 0:
        return {"runs": 0}
    p5, p50, p95 = np.percentile(draws, [5, 50, 95])
    return {"runs": len(draws), "net_pnl_p5": _money(p5), "net_pnl_p50": _money(p50),
            "net_pnl_p95": _money(p95), "net_pnl_mean": _money(float(draws.mean()))}


def rank_vs_random(net: float, draws: np.ndarray) -> float:
    """Percent of random draws the models beat (ties count half): 50 = the median draw."""
    if len(draws) == 0:
        return 50.0
    below = float((draws < net).sum()) + 0.5 * float((draws == net).sum())
    return round(100.0 * below / len(draws), 2)


def _money(x: float) -> str:
    return f"{x:.8f}"

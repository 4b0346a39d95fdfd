"""The reward for a closed position (seed 002's components, every coefficient in settings).

reward = pnl + risk + time + consistency + streak, clipped to ±clip, where

- ``pnl``  = pnl_scale × PnL after fees ÷ entry notional: the one PnL term;
- ``risk`` = −risk_scale × σ_hold, the price's realised volatility over the hold (the
  square root of the summed squared one-second log returns of the mid while it was
  open): what the position risked, whatever it made;
- ``time`` = −time_penalty_per_min × minutes held beyond free_hold_s;
- ``consistency`` = consistency_scale × how this PnL stands against the owner's recent
  ones (a z-score over the last 20, clipped to ±3);
- ``streak`` = a bonus per win in a row, a penalty per loss in a row (capped).

Each owner (the account, or one model's shadow positions) keeps its own recent PnLs and
streaks. A counterfactual (what a position would have made) gets the PnL and risk terms
only: it has no record to be consistent with.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

from engine.core.events import NS_PER_S, PositionClosed


@dataclass(frozen=True)
class RewardParams:
    pnl_scale: float = 100.0
    risk_scale: float = 10.0
    time_penalty_per_min: float = 0.01
    free_hold_s: float = 300.0
    consistency_scale: float = 0.05
    win_streak_step: float = 0.02
    win_streak_cap: float = 0.1
    loss_streak_step: float = 0.05
    loss_streak_cap: float = 0.2
    clip: float = 10.0


@dataclass(frozen=True)
class Reward:
    position_id: int
    total: float
    pnl_frac: float
    components: dict[str, float]


class Volatility:
    """One-second log returns of the primary's mid, to measure what a hold risked."""

    def __init__(self, keep: int = 7200) -> None:
        self._times: deque[int] = deque(maxlen=keep)
        self._sq: deque[float] = deque(maxlen=keep)
        self._mids: deque[float] = deque(maxlen=keep)
        self._last: float | None = None

    def add(self, ts: int, mid: float) -> None:
        if mid <= 0 or not math.isfinite(mid):
            return
        if self._last is not None:
            r = math.log(mid / self._last)
            self._times.append(ts)
            self._sq.append(r * r)
            self._mids.append(mid)
        self._last = mid

    def change(self, start_ns: int, end_ns: int) -> float | None:
        """Log change of the mid from the last mark at or before ``start`` to the last at or
        before ``end`` (None without a mark that old)."""
        times = self._times
        lo, hi = bisect_right(times, start_ns) - 1, bisect_right(times, end_ns) - 1
        if lo < 0 or hi < 0:
            return None
        return math.log(self._mids[hi] / self._mids[lo])

    def regime(self, now_ns: int, window_s: float) -> str | None:
        """trending / ranging / volatile over the last ``window_s`` (None until that much history):
        trending when the move is more than twice the window's volatility, volatile when the
        last minute ran at more than twice the window's pace, else ranging."""
        window = int(window_s * NS_PER_S)
        move = self.change(now_ns - window, now_ns)
        if move is None:
            return None
        vol = self.over(now_ns - window, now_ns)
        recent = self.over(now_ns - 60 * NS_PER_S, now_ns)
        if vol > 0 and recent > 2.0 * vol * math.sqrt(60.0 / window_s):
            return "volatile"
        if vol > 0 and abs(move) > 2.0 * vol:
            return "trending"
        return "ranging"

    def over(self, start_ns: int, end_ns: int) -> float:
        """Realised volatility (a fraction of price) of the returns ending in (start, end]."""
        times = self._times
        if not times:
            return 0.0
        lo, hi = bisect_right(times, start_ns), bisect_right(times, end_ns)
        return math.sqrt(sum(self._sq[i] for i in range(lo, hi)))


class RewardCalculator:
    """The reward of one owner's closed positions (see the module docstring)."""

    def __init__(self, params: RewardParams, window: int = 20) -> None:
        self.p = params
        self.recent: deque[float] = deque(maxlen=window)
        self.wins = 0
        self.losses = 0

    def __call__(self, pos: PositionClosed, vol_hold: float) -> Reward:
        p = self.p
        frac = _frac(pos)
        hold_min = max(pos.exit_ts - pos.entry_ts, 0) / NS_PER_S / 60.0
        if len(self.recent) > 1:
            mean = sum(self.recent) / len(self.recent)
            std = math.sqrt(sum((x - mean) ** 2 for x in self.recent) / len(self.recent))
            consistency = max(-3.0, min(3.0, (frac - mean) / (std + 1e-4)))
        else:
            consistency = 0.0
        if pos.realised_pnl > 0:
            self.wins, self.losses = self.wins + 1, 0
            streak = min(p.win_streak_cap, (self.wins - 1) * p.win_streak_step)
        else:
            self.wins, self.losses = 0, self.losses + 1
            streak = -min(p.loss_streak_cap, (self.losses - 1) * p.loss_streak_step)
        self.recent.append(frac)
        comps = {
            "pnl": p.pnl_scale * frac,
            "risk": -p.risk_scale * vol_hold,
            "time": -p.time_penalty_per_min * max(0.0, hold_min - p.free_hold_s / 60.0),
            "consistency": p.consistency_scale * consistency,
            "streak": streak,
        }
        return Reward(pos.position_id, _total(comps, p.clip), frac, comps)

    def counterfactual(self, frac: float, vol_hold: float) -> float:
        """A position that was not taken: its PnL and risk terms."""
        p = self.p
        return _total({"pnl": p.pnl_scale * frac, "risk": -p.risk_scale * vol_hold}, p.clip)


def _frac(pos: PositionClosed) -> float:
    notional = float(pos.entry_price * pos.qty)
    return float(pos.realised_pnl) / notional if notional > 0 else 0.0


def _total(comps: dict[str, float], clip: float) -> float:
    total = sum(comps.values())
    if not math.isfinite(total):
        return 0.0
    return max(-clip, min(clip, total))

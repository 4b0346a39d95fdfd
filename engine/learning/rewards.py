"""The reward for a closed position (seed 002's components, coefficients from settings).

reward = pnl_scale × PnL% after fees
       + time penalty past the free hold time
       + risk_scale × risk-adjusted return
       + consistency_scale × PnL against the spread of recent PnLs
       + win/loss streak term

PnL enters as a fraction of the position's entry notional (not in dollars), so one
reward scale fits every symbol and order size.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from engine.core.events import NS_PER_S, PositionClosed


@dataclass(frozen=True)
class RewardParams:
    pnl_scale: float = 100.0
    time_penalty_per_min: float = 0.01
    free_hold_s: float = 300.0
    risk_scale: float = 2.0
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


class RewardCalculator:
    """Keeps the recent-PnL window and streaks the seed's consistency and streak terms need."""

    def __init__(self, params: RewardParams, window: int = 20) -> None:
        self.p = params
        self.recent: deque[float] = deque(maxlen=window)
        self.wins = 0
        self.losses = 0

    def __call__(self, pos: PositionClosed, equity: float) -> Reward:
        p = self.p
        notional = float(pos.entry_price * pos.qty)
        pnl = float(pos.realised_pnl)
        frac = pnl / notional if notional > 0 else 0.0
        hold_min = max(pos.exit_ts - pos.entry_ts, 0) / NS_PER_S / 60.0
        time_pen = -p.time_penalty_per_min * max(0.0, hold_min - p.free_hold_s / 60.0)
        exposure = notional / equity if equity > 0 else 1.0
        risk_adj = frac / (exposure + 0.01)
        if len(self.recent) > 1:
            mean = sum(self.recent) / len(self.recent)
            std = math.sqrt(sum((x - mean) ** 2 for x in self.recent) / len(self.recent))
            consistency = frac / (std + 1e-3)
        else:
            consistency = 0.0
        if pnl > 0:
            self.wins, self.losses = self.wins + 1, 0
            streak = min(p.win_streak_cap, (self.wins - 1) * p.win_streak_step)
        else:
            self.wins, self.losses = 0, self.losses + 1
            streak = -min(p.loss_streak_cap, (self.losses - 1) * p.loss_streak_step)
        self.recent.append(frac)
        comps = {
            "pnl": p.pnl_scale * frac,
            "time": time_pen,
            "risk": p.risk_scale * risk_adj,
            "consistency": p.consistency_scale * consistency,
            "streak": streak,
        }
        total = sum(comps.values())
        if not math.isfinite(total):
            total = 0.0
        total = max(-p.clip, min(p.clip, total))
        return Reward(pos.position_id, total, frac, comps)

"""The decision policy: from the models' fresh signals and the open position to an action.

Fusion (:mod:`engine.learning.fusion`) gives a score; the thresholds turn it into BUY /
SELL / CLOSE / HOLD; then the desk's own rules: an automatic position held past
``fusion.max_hold_s`` is closed; a flat book sometimes takes the DQN's exploratory
BUY/SELL, with a chance (``fusion.explore_rate``) that falls as the account's record grows
(``fusion.explore_decay_trades``), so the models get outcomes to learn from; and an
exploratory position is held at least ``fusion.explore_min_hold_s`` before the close
threshold may close it, so exploring learns something instead of paying two fees.

The fusion weights follow each model's own record: a model's weight from settings is
multiplied by ``exp(fusion.record_weighting × R)``, R being the summed return (after fees,
as a fraction of notional) of its last ``fusion.record_window`` non-exploratory shadow
positions, capped at ×20 either way: a multiplicative-weights (Hedge) vote, so the model
whose own calls have been paying leads the ensemble, and one whose calls lose fees fades
without being switched off. A model with no record keeps its weight.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from engine.core.events import NS_PER_S
from engine.core.settings import Settings
from engine.learning.fusion import Fused, ModelSignal, decide, fuse

#: The record moves a weight at most e^3 (about ×20) either way.
MAX_LOG_MULTIPLIER = 3.0


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # BUY / SELL / CLOSE / HOLD
    fused: Fused
    note: str = ""  # "max hold", "explore" or ""


class DecisionPolicy:
    """Fusion, thresholds, max hold and exploration, with their counters."""

    def __init__(self, cfg: Settings) -> None:
        f = cfg.fusion
        self.base_weights = dict(f.weights)
        self.weights = dict(f.weights)  # the base weights times each model's record multiplier
        self.record_weighting = f.record_weighting
        self.record_window = f.record_window
        self.record_multipliers: dict[str, float] = {}
        self.open_threshold = f.open_threshold
        self.close_threshold = f.close_threshold
        self.max_hold_s = f.max_hold_s
        self.explore_rate = f.explore_rate
        self.explore_decay = f.explore_decay_trades
        self.explore_min_hold_ns = int(f.explore_min_hold_s * NS_PER_S)
        self.min_hold_ns = int(f.min_hold_s * NS_PER_S)
        self._explore_rng = np.random.default_rng(cfg.general.seed + 101)
        self.explorations = 0
        self.max_hold_closes = 0

    def follow_record(self, model: str, returns: Iterable[float]) -> float:
        """Set ``model``'s weight from its record (its own positions' returns, oldest first);
        returns the multiplier."""
        recent = list(returns)[-self.record_window:]
        x = max(-MAX_LOG_MULTIPLIER, min(MAX_LOG_MULTIPLIER, self.record_weighting * math.fsum(recent)))
        mult = math.exp(x)
        self.record_multipliers[model] = mult
        if model in self.base_weights:
            self.weights[model] = self.base_weights[model] * mult
        return mult

    def explore_chance(self, trades: int) -> float:
        if self.explore_decay <= 0:
            return self.explore_rate
        return self.explore_rate * self.explore_decay / (self.explore_decay + trades)

    def decide(self, fresh: Mapping[str, ModelSignal], side: str | None, entry_ts: int | None, now: int,
               dqn_explored: str, allow_short: bool, *, trades: int = 0, exploring: bool = False) -> Decision | None:
        """``side``/``entry_ts`` of the open position (None when flat), ``exploring`` when it
        was an exploratory entry; ``dqn_explored`` the DQN's epsilon-greedy action at its last
        prediction ("" when it did not explore); ``trades`` the account's closed positions.
        None when no model is available: no decision is ever invented."""
        fused = fuse(fresh, self.weights)
        if fused is None:
            return None
        action = decide(fused.score, side, self.open_threshold, self.close_threshold, allow_short)
        note = ""
        hold_first = max(self.min_hold_ns, self.explore_min_hold_ns if exploring else 0)
        if action == "CLOSE" and entry_ts is not None and now - entry_ts < hold_first:
            action = "HOLD"  # the minimum hold comes first (longer for an exploratory entry)
        if action == "HOLD" and side is not None and entry_ts is not None and self.max_hold_s > 0 and \
                now - entry_ts > self.max_hold_s * NS_PER_S:
            action, note = "CLOSE", "max hold"
            self.max_hold_closes += 1
        elif action == "HOLD" and side is None and self.explore_rate > 0 and \
                self._explore_rng.random() < self.explore_chance(trades) and "dqn" in fresh and \
                dqn_explored in ("BUY", "SELL") and (dqn_explored == "BUY" or allow_short):
            # (the draw comes first: one draw per flat HOLD decision, whatever the DQN said)
            action, note = dqn_explored, "explore"
            self.explorations += 1
        return Decision(action, fused, note)

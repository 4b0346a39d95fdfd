"""Shadow positions: the positions each model would have taken from its own signal alone.

Every model keeps a book of its own, outside the account and the risk budget, under the
account's rules: the fusion thresholds on the model's own score (open at
``fusion.open_threshold``, close at ``fusion.close_threshold`` against it), the same
maximum hold, the same order size, the same fills (orders go to a paper venue that walks
the engine's own books after the paper latency) and the same fees. A model that only
says HOLD still explores: with a chance that falls as its own record grows, it takes an
exploratory position (its own exploratory side when it has one: the DQN's epsilon draw,
a draw from the COB's policy; else a coin), which is held at least
``fusion.explore_min_hold_s`` before its signal may close it.

Each closed shadow position is an outcome that trains its model at full weight; each
model's record (trades, wins, net PnL after fees, the hold durations for a random-entry
comparison) is what the models pane shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np

from engine.core.events import NS_PER_S, PositionClosed, PositionOpened, Side
from engine.core.settings import Settings
from engine.execution.executor import ExecReport, OrderRequest, OrderState, OrderType
from engine.execution.positions import Portfolio
from engine.learning.fusion import decide

if TYPE_CHECKING:
    from engine.execution.paper_executor import PaperExecutor
    from models.common.base_agent import Experience

ZERO = Decimal(0)


@dataclass
class ShadowRecord:
    """One model's shadow trading record."""

    trades: int = 0
    wins: int = 0
    explorations: int = 0
    net_pnl: Decimal = ZERO  # after fees
    fees: Decimal = ZERO
    durations_ns: list[int] = field(default_factory=list)


@dataclass
class ExploreRule:
    rate: float  # chance per flat HOLD decision at the start
    decay_trades: float  # the chance halves once the record has this many trades
    min_hold_ns: int

    def chance(self, trades: int) -> float:
        if self.rate <= 0:
            return 0.0
        return self.rate * self.decay_trades / (self.decay_trades + trades) if self.decay_trades > 0 else self.rate


class ShadowBook:
    """One model's own positions (see the module docstring)."""

    def __init__(self, model: str, cfg: Settings, venue: PaperExecutor, allow_short: bool, seed: int,
                 explore: ExploreRule) -> None:
        f = cfg.fusion
        self.model = model
        self.venue = venue
        self.open_threshold, self.close_threshold = f.open_threshold, f.close_threshold
        self.max_hold_ns = int(f.max_hold_s * NS_PER_S)
        self.min_hold_ns = int(f.min_hold_s * NS_PER_S)
        self.allow_short = allow_short
        self.explore = explore
        self.rng = np.random.default_rng(seed)
        self.portfolio = Portfolio(allow_short=True)  # the rules below decide; a fill is applied in full
        self.record = ShadowRecord()
        self.working: str | None = None  # client id of the order on its way
        self.exploring = False  # the open (or opening) position is exploratory
        self.experience: Experience | None = None
        self._opening_experience: Experience | None = None
        self._seq = 0

    # ------------------------------------------------------------------ decisions

    def step(self, symbol: str, score: float, explore_side: str, qty: Decimal | None, now: int,
             begin: Callable[[int], Experience], extend: Callable[[Experience, int], None]) -> str:
        """The model's own decision at one tick; returns what the shadow did ("" for nothing).

        ``begin(action)`` starts the model's experience for an opening; ``extend(exp,
        action)`` adds a later decision while the position is open."""
        if self.working is not None:
            return ""
        pos = self.portfolio.positions.get(symbol)
        if pos is None:
            action = decide(score, None, self.open_threshold, self.close_threshold, self.allow_short)
            exploring = False
            if action == "HOLD" and self.rng.random() < self.explore.chance(self.record.trades):
                pick = explore_side if explore_side in ("BUY", "SELL") else ("BUY" if self.rng.random() < 0.5 else "SELL")
                if pick == "BUY" or self.allow_short:
                    action, exploring = pick, True
            if action not in ("BUY", "SELL") or not qty:
                return ""
            side = Side(action)
            self._opening_experience = begin(0 if side is Side.BUY else 2)
            self.exploring = exploring
            self._send(symbol, side, qty, now)
            return f"open {action}" + (" (explore)" if exploring else "")
        held = now - pos.entry_ts
        action = decide(score, pos.side.value, self.open_threshold, self.close_threshold, self.allow_short)
        if action == "CLOSE" and held < max(self.min_hold_ns, self.explore.min_hold_ns if self.exploring else 0):
            action = "HOLD"  # the minimum hold (longer if exploratory) before its signal may close it
        if action == "HOLD" and self.max_hold_ns > 0 and held > self.max_hold_ns:
            action = "CLOSE"
        closing_side = pos.side.opposite()
        if self.experience is not None:
            extend(self.experience, 1 if action == "HOLD" else (0 if closing_side is Side.BUY else 2))
        if action != "CLOSE":
            return ""
        self._send(symbol, closing_side, pos.qty, now)
        return "close"

    def _send(self, symbol: str, side: Side, qty: Decimal, now: int) -> None:
        self._seq += 1
        cid = f"shadow-{self.model}-{self._seq}"
        self.working = cid
        self.on_reports(self.venue.submit(OrderRequest(cid, symbol, side, qty, OrderType.MARKET, reason="shadow",
                                                       ts=now), now))

    # ------------------------------------------------------------------ fills

    def owns(self, client_id: str) -> bool:
        return client_id.startswith(f"shadow-{self.model}-")

    def on_reports(self, reports: list[ExecReport]) -> list[tuple[PositionClosed, Experience | None, bool]]:
        """Apply the venue's answers; the closed positions with their experience and whether
        they were exploratory."""
        closed = []
        for rep in reports:
            for f in rep.fills:
                for ev in self.portfolio.apply_fill(f):
                    if isinstance(ev, PositionOpened):
                        self.experience, self._opening_experience = self._opening_experience, None
                    elif isinstance(ev, PositionClosed):
                        closed.append(self._closed(ev))
            if rep.state.terminal or rep.state is OrderState.REJECTED:
                self.working = None
                if self._opening_experience is not None and rep.state is not OrderState.FILLED and not rep.fills:
                    self._opening_experience, self.exploring = None, False  # nothing opened
        return closed

    def _closed(self, ev: PositionClosed) -> tuple[PositionClosed, Experience | None, bool]:
        r = self.record
        r.trades += 1
        r.wins += ev.realised_pnl > 0
        r.explorations += self.exploring
        r.net_pnl += ev.realised_pnl
        r.fees += ev.fees
        r.durations_ns.append(ev.exit_ts - ev.entry_ts)
        exp, exploring = self.experience, self.exploring
        self.experience, self.exploring = None, False
        return ev, exp, exploring

"""HOLD's counterfactual: what a position opened at a HOLD would have made.

A model that holds learns nothing from its own book; a flat desk learns nothing at all.
Every ``learning.probe_every_s`` of market time (on a LIVE book) the desk notes what a
market BUY and a market SELL of the order size would fill at now (walking the book, the
taker fee paid), and ``learning.probe_hold_s`` later what closing each would fill at.
Each model then learns, from the inputs it saw at the start, what BUY and SELL would
have earned after fees (HOLD earning 0): the answer the market gave, known only once the
hold is over and used only then, never earlier.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from engine.core.events import NS_PER_S
from engine.execution.paper_executor import walk_book
from engine.learning.rewards import RewardCalculator, Volatility

if TYPE_CHECKING:
    from engine.market.symbol_state import SymbolState
    from models.common.inputs import ModelInputs

ZERO = Decimal(0)
DEPTH = 50


@dataclass(frozen=True, slots=True)
class Probe:
    opened_ns: int
    inputs: ModelInputs
    qty: Decimal
    buy_px: Decimal  # a BUY of qty opened at this VWAP
    sell_px: Decimal  # a SELL of qty opened at this VWAP


@dataclass(frozen=True, slots=True)
class Settled:
    probe: Probe
    rewards: tuple[float, float, float]  # BUY, HOLD, SELL
    fracs: tuple[float, float]  # the BUY and SELL PnL as a fraction of notional, after fees


def vwap_fill(st: SymbolState, qty: Decimal, buy: bool) -> Decimal | None:
    levels = st.book.book.top_asks(DEPTH) if buy else st.book.book.top_bids(DEPTH)
    taken = walk_book(levels, qty)
    got = sum((q for _, q in taken), ZERO)
    if got < qty or got == 0:
        return None
    return sum((p * q for p, q in taken), ZERO) / got


class Probes:
    """Open a probe now and then; settle the ones whose hold is over."""

    def __init__(self, every_s: float, hold_s: float, fee_rate: Decimal, rewards: RewardCalculator,
                 vol: Volatility) -> None:
        self.every_ns = int(every_s * NS_PER_S)
        self.hold_ns = int(hold_s * NS_PER_S)
        self.fee = fee_rate
        self.rewards = rewards
        self.vol = vol
        self._open: deque[Probe] = deque()
        self._next = 0
        self.opened = 0
        self.settled = 0

    def maybe_open(self, now: int, st: SymbolState, qty: Decimal | None, inputs: ModelInputs) -> bool:
        if self.every_ns <= 0 or now < self._next or not qty:
            return False
        buy, sell = vwap_fill(st, qty, True), vwap_fill(st, qty, False)
        if buy is None or sell is None:
            return False
        self._next = now + self.every_ns
        self._open.append(Probe(now, inputs, qty, buy, sell))
        self.opened += 1
        return True

    def settle(self, now: int, st: SymbolState) -> list[Settled]:
        out: list[Settled] = []
        while self._open and now - self._open[0].opened_ns >= self.hold_ns:
            p = self._open[0]
            exit_sell, exit_buy = vwap_fill(st, p.qty, False), vwap_fill(st, p.qty, True)
            if exit_sell is None or exit_buy is None:
                return out  # the book is too thin right now: try again at the next tick
            self._open.popleft()
            fee = self.fee
            long = (exit_sell - p.buy_px - fee * (p.buy_px + exit_sell)) / p.buy_px
            short = (p.sell_px - exit_buy - fee * (p.sell_px + exit_buy)) / p.sell_px
            vol = self.vol.over(p.opened_ns, now)
            fl, fs = float(long), float(short)
            out.append(Settled(p, (self.rewards.counterfactual(fl, vol), 0.0, self.rewards.counterfactual(fs, vol)),
                               (fl, fs)))
            self.settled += 1
        return out

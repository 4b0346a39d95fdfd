"""The pre-trade risk gate and the trading state machine.

Every order, manual or automatic, closes and panics included, is checked here before it
is journaled and sent. A denial carries a short code (for tests and counters) and a
sentence for the signal log; it is never silent.

Trading states, worst cause wins:

- ``ACTIVE``: everything the limits allow.
- ``REDUCING``: only orders that reduce exposure. Entered automatically when the day's
  loss reaches ``risk.max_daily_loss`` (until the next UTC day) or a traded book goes
  STALE (until it is LIVE again).
- ``HALTED``: nothing but the panic flatten. Entered by the panic key, by
  ``risk.max_consecutive_errors`` order errors in a row, by an exchange
  authentication error, or by a live venue that could not start; left only by an
  explicit resume. A failing ledger also halts, until its writes succeed again.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine.core.events import NS_PER_S, BookState, Side
from engine.core.symbols import SymbolFilters

ZERO = Decimal(0)
WINDOW_NS = 60 * NS_PER_S


class TradingState(enum.Enum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}

# Causes the engine sets; the sticky ones need an explicit resume.
CAUSE_PANIC = "panic"
CAUSE_ERRORS = "errors"
CAUSE_AUTH = "auth"
CAUSE_VENUE = "venue"  # the live executor could not start (its bounded attempts are spent)
CAUSE_LEDGER = "ledger"
CAUSE_DAILY_LOSS = "daily_loss"
CAUSE_STALE = "stale"
STICKY = frozenset({CAUSE_PANIC, CAUSE_ERRORS, CAUSE_AUTH, CAUSE_VENUE})


@dataclass(frozen=True, slots=True)
class Denial:
    code: str  # bad_qty, bad_price, bad_tick, below_min_qty, above_max_qty, below_min_notional,
    #            over_notional, over_position, book_not_live, stale_data, halted, reducing,
    #            short_disabled, rate_limit, insufficient_balance, ledger, not_confirmed, ...
    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class RiskLimits:
    max_order_notional: Decimal
    max_position_notional: Decimal
    max_daily_loss: Decimal
    max_orders_per_min: int
    max_consecutive_errors: int
    max_data_age_ns: int

    @classmethod
    def from_settings(cls, risk: Any) -> RiskLimits:
        return cls(
            risk.max_order_notional, risk.max_position_notional, risk.max_daily_loss,
            risk.max_orders_per_min, risk.max_consecutive_errors, int(risk.max_data_age_s * NS_PER_S),
        )


@dataclass(frozen=True, slots=True)
class OrderCheck:
    """Everything the gate needs to judge one order (built by the engine)."""

    symbol: str
    side: Side
    qty: Decimal
    price: Decimal | None  # the limit price, or the mark a market order is priced at
    filters: SymbolFilters
    book_state: BookState
    position: Decimal = ZERO  # signed open position
    pending: Decimal = ZERO  # signed quantity of orders in flight or resting
    limit_price: Decimal | None = None
    data_age_ns: int | None = None
    buying_power: Decimal | None = None  # paper: equity not yet used by positions; None = the venue checks
    force: bool = False  # the panic flatten: bypasses state, rate and loss checks, never the sanity ones
    needs_book: bool = True  # paper can only fill on a LIVE book; a live panic may go out without one


def _finite_positive(x: Decimal | None) -> bool:
    return x is not None and x.is_finite() and x > 0


class RiskGate:
    """Pre-trade checks plus the ACTIVE / REDUCING / HALTED state machine."""

    def __init__(
        self,
        limits: RiskLimits,
        allow_short: bool,
        on_change: Callable[[TradingState, str, int], None] | None = None,
    ) -> None:
        self.limits = limits
        self.allow_short = allow_short
        self.on_change = on_change
        self.causes: dict[str, tuple[TradingState, str]] = {}
        self._sent: deque[int] = deque()  # accept times inside the rate window
        self.consecutive_errors = 0
        self.denied: dict[str, int] = {}
        self.day_key: int | None = None

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> TradingState:
        worst = TradingState.ACTIVE
        for st, _ in self.causes.values():
            if st.severity > worst.severity:
                worst = st
        return worst

    @property
    def reason(self) -> str:
        st = self.state
        return "; ".join(r for s, r in self.causes.values() if s is st)

    def set_cause(self, cause: str, state: TradingState, reason: str, now: int) -> None:
        before = self.state
        old = self.causes.get(cause)
        self.causes[cause] = (state, reason)
        if self.state is not before or (old is None and state.severity >= before.severity > 0):
            self._changed(now)

    def clear_cause(self, cause: str, now: int) -> None:
        if cause in self.causes:
            before = self.state
            del self.causes[cause]
            if self.state is not before:
                self._changed(now)

    def resume(self, now: int) -> list[str]:
        """Clear the sticky causes (panic, errors, auth); the automatic ones stay while true."""
        cleared = [c for c in self.causes if c in STICKY]
        before = self.state
        for c in cleared:
            del self.causes[c]
        self.consecutive_errors = 0
        if self.state is not before:
            self._changed(now)
        return cleared

    def _changed(self, now: int) -> None:
        if self.on_change is not None:
            self.on_change(self.state, self.reason or "all clear", now)

    # ------------------------------------------------------------------ automatic transitions

    def order_error(self, reason: str, now: int) -> None:
        """A rejected or failed order; ``max_consecutive_errors`` in a row halt trading."""
        self.consecutive_errors += 1
        n = self.consecutive_errors
        if n >= self.limits.max_consecutive_errors and CAUSE_ERRORS not in self.causes:
            self.set_cause(CAUSE_ERRORS, TradingState.HALTED, f"{n} order errors in a row (last: {reason})", now)

    def order_ok(self) -> None:
        self.consecutive_errors = 0

    def update_day_pnl(self, day_pnl: Decimal, day_key: int, now: int) -> None:
        """Day PnL = realised today + unrealised now, after fees. Past the limit ⇒ REDUCING."""
        if self.day_key != day_key:
            self.day_key = day_key
            self.clear_cause(CAUSE_DAILY_LOSS, now)
        if day_pnl <= -self.limits.max_daily_loss and CAUSE_DAILY_LOSS not in self.causes:
            self.set_cause(CAUSE_DAILY_LOSS, TradingState.REDUCING,
                           f"daily loss {-day_pnl:.2f} reached risk.max_daily_loss {self.limits.max_daily_loss}", now)

    def on_book_state(self, symbol: str, state: BookState, reason: str, now: int) -> None:
        key = f"{CAUSE_STALE}:{symbol}"
        if state is BookState.STALE:
            self.set_cause(key, TradingState.REDUCING, f"stale data on {symbol}: {reason}", now)
        elif state is BookState.LIVE:
            self.clear_cause(key, now)

    # ------------------------------------------------------------------ the gate

    def check(self, o: OrderCheck, now: int) -> tuple[Decimal, Denial | None]:
        """Return the quantity to send (rounded down to the step size) or a denial."""
        d = self._check(o, now)
        if d is not None:
            self.denied[d.code] = self.denied.get(d.code, 0) + 1
            return o.qty, d
        return o.filters.round_qty(o.qty), None

    def accepted(self, now: int) -> None:
        """Count an order that passed and was journaled (the rate limit counts these)."""
        self._sent.append(now)

    def _check(self, o: OrderCheck, now: int) -> Denial | None:
        lim, f = self.limits, o.filters
        if not o.qty.is_finite() or o.qty <= 0:
            return Denial("bad_qty", f"quantity {o.qty} is not a finite positive number")
        if o.limit_price is not None and not _finite_positive(o.limit_price):
            return Denial("bad_price", f"limit price {o.limit_price} is not a finite positive number")
        if not _finite_positive(o.price):
            return Denial("bad_price", "no finite positive price to check the order against (empty book?)")
        assert o.price is not None
        qty = f.round_qty(o.qty)
        if qty < f.min_qty or qty <= 0:
            return Denial("below_min_qty", f"quantity {o.qty} is below the exchange minimum {f.min_qty} "
                                           f"(step {f.step_size})")
        if qty > f.max_qty:
            return Denial("above_max_qty", f"quantity {o.qty} is above the exchange maximum {f.max_qty}")
        if o.limit_price is not None and o.limit_price % f.tick_size != 0:
            return Denial("bad_tick", f"limit price {o.limit_price} is not a multiple of the tick size {f.tick_size}")
        notional = qty * o.price
        if notional < f.min_notional:
            return Denial("below_min_notional", f"notional {notional:.4f} is below the exchange minimum {f.min_notional}")
        exposure = o.position + o.pending
        after = exposure + o.side.sign * qty
        increases = abs(after) > abs(exposure)
        if increases and notional > lim.max_order_notional:
            return Denial("over_notional", f"notional {notional:.2f} is over risk.max_order_notional {lim.max_order_notional}")
        if o.needs_book and o.book_state is not BookState.LIVE:
            return Denial("book_not_live", f"book {o.book_state.value}, not LIVE")
        if o.needs_book and o.data_age_ns is not None and o.data_age_ns > lim.max_data_age_ns:
            return Denial("stale_data", f"last market data is {o.data_age_ns / NS_PER_S:.1f} s old "
                                        f"(risk.max_data_age_s {lim.max_data_age_ns / NS_PER_S:g})")
        if not o.force:
            st = self.state
            if st is TradingState.HALTED:
                return Denial("halted", f"trading HALTED: {self.reason}")
            if st is TradingState.REDUCING and increases:
                return Denial("reducing", f"trading REDUCING (only orders that reduce exposure): {self.reason}")
        if after < 0 and not self.allow_short and after < exposure:
            return Denial("short_disabled", "this SELL would open a short and shorting is off")
        if increases and abs(after) * o.price > lim.max_position_notional:
            return Denial("over_position", f"position would be {abs(after) * o.price:.2f} in quote, over "
                                           f"risk.max_position_notional {lim.max_position_notional}")
        if increases and o.buying_power is not None:
            added = (abs(after) - abs(exposure)) * o.price  # the growth of gross exposure (a flip counts net)
            if added > o.buying_power:
                return Denial("insufficient_balance", f"needs {added:.2f} of buying power, {o.buying_power:.2f} left")
        if not o.force:
            sent = self._sent
            while sent and sent[0] <= now - WINDOW_NS:
                sent.popleft()
            if len(sent) >= lim.max_orders_per_min:
                return Denial("rate_limit", f"{len(sent)} orders in the last minute "
                                            f"(risk.max_orders_per_min {lim.max_orders_per_min})")
        return None

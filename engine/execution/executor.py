"""The executor interface: one port, two adapters (paper in ``engine.execution.paper_executor``, live in
``engine.execution.live_executor``).

The engine owns the order lifecycle: it checks an order with the risk gate, writes the
intent to the ledger, and only then hands the order to an executor. An executor answers
with :class:`ExecReport` objects, either at once (``submit`` returns them) or later
(``poll`` for time-driven work such as the paper latency model, ``on_trade`` for resting
limit orders, the ``on_report`` callback for asynchronous live results). The engine
writes every report to the ledger before it tells anyone about it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from engine.core.events import OrderFilled, Side, Trade

if TYPE_CHECKING:
    from engine.market.book import SyncedBook

ZERO = Decimal(0)


class OrderType(enum.Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"


class OrderState(enum.Enum):
    """Where an order is in its life. Terminal states never change again."""

    NEW = "NEW"  # intent written to the ledger, not yet handed to the venue
    SENT = "SENT"  # handed to the venue, no answer yet
    OPEN = "OPEN"  # accepted and resting (limit orders), possibly partly filled
    FILLED = "FILLED"
    CANCELED = "CANCELED"  # canceled (by us, or the unfilled rest of a market order), possibly partly filled
    REJECTED = "REJECTED"  # the venue refused it, nothing executed
    UNKNOWN = "UNKNOWN"  # the venue may or may not have it: resolve by client order id, never resend

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def outcome(self) -> Outcome:
        if self is OrderState.REJECTED:
            return Outcome.REJECTED
        if self in (OrderState.NEW, OrderState.SENT, OrderState.UNKNOWN):
            return Outcome.UNKNOWN
        return Outcome.CONFIRMED


_TERMINAL = frozenset({OrderState.FILLED, OrderState.CANCELED, OrderState.REJECTED})


class Outcome(enum.Enum):
    """Every exchange result is one of these three (RELIABILITY: orders)."""

    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order as the engine hands it to an executor (already risk-checked and journaled)."""

    client_id: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    reason: str = "manual"  # manual / auto / close / panic
    decision_id: int | None = None
    ts: int = 0
    ref_price: Decimal | None = None  # the mark the risk gate priced it at


@dataclass(frozen=True, slots=True)
class ExecReport:
    """What the venue said about one order. ``fills`` are the new fills in this report."""

    client_id: str
    state: OrderState
    ts: int
    fills: tuple[OrderFilled, ...] = ()
    reason: str = ""
    exchange_id: str | None = None
    error: str = ""  # exception class name for exchange errors ("" when none)

    @property
    def outcome(self) -> Outcome:
        return self.state.outcome

    @property
    def filled_qty(self) -> Decimal:
        return sum((f.qty for f in self.fills), ZERO)


@dataclass
class OpenOrder:
    """The engine's in-memory view of an order that is not terminal yet."""

    request: OrderRequest
    state: OrderState = OrderState.NEW
    filled: Decimal = ZERO
    fill_ids: set[str] = field(default_factory=set)

    @property
    def remaining(self) -> Decimal:
        return self.request.qty - self.filled


@dataclass(frozen=True)
class ExecutorPorts:
    """What the engine's order path hands an executor when it takes it on (:meth:`Executor.bind`)."""

    on_report: Callable[[ExecReport], None]  # reports that arrive outside submit/poll/on_trade
    now_ns: Callable[[], int]  # the engine's clock, to stamp those reports
    book_of: Callable[[str], SyncedBook | None]  # the engine's synced book of a symbol
    # (error class, reason): the venue stopped trading by itself (refused keys, no start); None: not heard
    on_halt: Callable[[str, str], None] | None = None


class Executor(Protocol):
    """A venue. ``name`` is ``paper`` or ``live``."""

    name: str

    def bind(self, ports: ExecutorPorts) -> None:
        """Called once by the order path that owns this executor, before the first order."""
        ...

    def submit(self, order: OrderRequest, now: int) -> list[ExecReport]:
        """Send an order; return whatever is known at once (possibly nothing yet)."""
        ...

    def cancel(self, client_id: str, now: int) -> list[ExecReport]:
        """Cancel a resting order; return the resulting reports."""
        ...

    def poll(self, now: int) -> list[ExecReport]:
        """Reports that became due by ``now`` (latency-delayed orders)."""
        ...

    def on_trade(self, trade: Trade) -> list[ExecReport]:
        """A market trade happened: resting orders it trades through fill."""
        ...

    def busy(self) -> bool:
        """True while orders are queued or resting (the engine then watches the market for them)."""
        ...

    def restore(self, order: OpenOrder) -> None:
        """Take back an order that was resting or in flight when the process stopped."""
        ...

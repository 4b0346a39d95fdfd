"""Typed, immutable messages that travel on the bus.

Market data are nouns (``Trade``, ``BookDelta``, ``BookSnapshot``, ``BestBidAsk``,
``Bar``); commands are imperative (``SubmitOrder``, ``ClosePosition``, ``ToggleModel``);
events are past tense (``OrderFilled``, ``PositionClosed`` ...). Timestamps are integer
nanoseconds: ``ts_event`` is exchange time, ``ts_recv`` local receive time. Money is
``Decimal``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

Level = tuple[Decimal, Decimal]  # (price, quantity); quantity 0 deletes the level


class Side(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class BookState(enum.Enum):
    SYNCING = "SYNCING"
    LIVE = "LIVE"
    STALE = "STALE"


# --------------------------------------------------------------------------- market data


@dataclass(frozen=True, slots=True)
class Trade:
    symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal
    buyer_is_maker: bool  # True: the taker sold (aggressive sell)
    ts_event: int  # exchange trade time T, ns
    ts_recv: int
    venue: str = "binance"

    @property
    def taker_side(self) -> Side:
        return Side.SELL if self.buyer_is_maker else Side.BUY


@dataclass(frozen=True, slots=True)
class BookDelta:
    """A Binance diff-depth update covering update ids ``first_id``..``final_id``."""

    symbol: str
    first_id: int  # U
    final_id: int  # u
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    ts_event: int
    ts_recv: int
    venue: str = "binance"


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """A REST depth snapshot (``lastUpdateId``, full levels)."""

    symbol: str
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    ts_recv: int
    venue: str = "binance"


@dataclass(frozen=True, slots=True)
class BestBidAsk:
    symbol: str
    update_id: int
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    ts_recv: int
    venue: str = "binance"


@dataclass(frozen=True, slots=True)
class Bar:
    """A closed bar; ``open_time`` = first trade time floored to the timeframe (ns)."""

    symbol: str
    timeframe: str
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    buy_volume: Decimal
    trades: int


MarketData = Trade | BookDelta | BookSnapshot | BestBidAsk

# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class SubmitOrder:
    symbol: str
    side: Side
    qty: Decimal
    reason: str = "manual"  # "manual" or "auto"
    decision_id: int | None = None
    limit_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ClosePosition:
    symbol: str
    reason: str = "manual"
    decision_id: int | None = None


@dataclass(frozen=True, slots=True)
class ManualOrder:
    """The desk's buy/sell keys, with SPEC §4's position rules: against an open position
    (or one on its way) the key closes it; otherwise it trades the order size."""

    symbol: str
    side: Side


@dataclass(frozen=True, slots=True)
class ToggleModel:
    model: str
    enabled: bool | None = None  # None flips


@dataclass(frozen=True, slots=True)
class SetAutoTrading:
    enabled: bool | None = None  # None flips


@dataclass(frozen=True, slots=True)
class SetTraining:
    enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class Panic:
    """Flatten everything and halt trading."""


@dataclass(frozen=True, slots=True)
class PauseReplay:
    paused: bool | None = None


@dataclass(frozen=True, slots=True)
class SetOrderSize:
    """Change the order notional by ``steps`` x ``trading.notional_step`` (never below one step)."""

    steps: int


@dataclass(frozen=True, slots=True)
class CancelOrders:
    """Cancel resting and in-flight orders: one by client id, one symbol's, or all (both None)."""

    symbol: str | None = None
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResumeTrading:
    """Leave HALTED after a panic, repeated errors or an auth error (automatic causes stay)."""


Command = (
    SubmitOrder | ClosePosition | ManualOrder | ToggleModel | SetAutoTrading | SetTraining | Panic | PauseReplay
    | SetOrderSize | CancelOrders | ResumeTrading
)

# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class BookStateChanged:
    symbol: str
    state: BookState
    reason: str
    ts: int


@dataclass(frozen=True, slots=True)
class ReplayPaused:
    """The user paused (``paused``) or resumed a replay; the replay driver holds or goes on."""

    paused: bool
    ts: int


@dataclass(frozen=True, slots=True)
class OrderDenied:
    symbol: str
    side: Side
    qty: Decimal
    reason: str
    ts: int
    source: str = "manual"
    code: str = ""  # short reason code (engine.risk.Denial.code, or "rejected" by the venue)


@dataclass(frozen=True, slots=True)
class TradingStateChanged:
    """ACTIVE / REDUCING / HALTED, with the reason (the desk shows it as a banner)."""

    state: str
    reason: str
    ts: int


@dataclass(frozen=True, slots=True)
class OrderFilled:
    order_id: str
    fill_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal  # VWAP of this fill
    fee: Decimal
    ts: int
    liquidity: str = "taker"
    slippage_bps: float = 0.0


@dataclass(frozen=True, slots=True)
class PositionOpened:
    position_id: int
    symbol: str
    side: Side
    qty: Decimal
    entry_price: Decimal
    ts: int
    decision_id: int | None = None


@dataclass(frozen=True, slots=True)
class PositionClosed:
    position_id: int
    symbol: str
    side: Side
    qty: Decimal
    entry_price: Decimal
    exit_price: Decimal
    entry_ts: int
    exit_ts: int
    fees: Decimal
    realised_pnl: Decimal  # after fees
    decision_id: int | None = None


@dataclass(frozen=True, slots=True)
class SignalEmitted:
    model: str
    symbol: str
    action: str  # BUY / HOLD / SELL
    confidence: float
    ts: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Contribution:
    model: str
    action: str
    confidence: float
    weight: float


@dataclass(frozen=True, slots=True)
class DecisionMade:
    decision_id: int
    symbol: str
    action: str
    score: float
    ts: int
    contributions: tuple[Contribution, ...] = ()
    executed: bool = False
    why_not: str = ""


@dataclass(frozen=True, slots=True)
class ModelTrained:
    """A real update of a model (an optimizer step happened)."""

    model: str
    step: int
    loss: float
    reward: float
    position_id: int | None
    ts: int
    scale: float = 1.0  # the weight the reward was applied with (the model's credit)
    source: str = "account"  # whose outcome: "account" (fused or manual) or "shadow"


@dataclass(frozen=True, slots=True)
class TrainingSkipped:
    """An outcome that did not update a model, and why (training off, nothing to learn yet,
    non-finite numbers): journaled apart, never counted as training."""

    model: str
    reason: str
    reward: float
    position_id: int | None
    ts: int
    source: str = "account"


@dataclass(frozen=True, slots=True)
class Notice:
    """A line for the signal/status log (errors, mode changes, warnings)."""

    level: str
    text: str
    ts: int
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

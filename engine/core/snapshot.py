"""Immutable views of the engine for the desk and the headless status line.

The UI pulls one of these at 4-10 Hz; nothing in it is shared with the engine's
mutable state, so the UI can hold it as long as it likes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class LogLine:
    ts: int
    source: str  # "manual", "cnn", "fusion", "risk", "engine", ...
    text: str
    level: str = "info"  # info / good / warn / error


@dataclass(frozen=True, slots=True)
class SymbolView:
    symbol: str
    display: str
    last_price: Decimal | None
    bid: Decimal | None
    ask: Decimal | None
    spread: Decimal | None
    change_pct: float | None  # since the session's first trade
    book_state: str
    last_msg_age_s: float | None
    trades: int
    bars: dict[str, int]


@dataclass(frozen=True, slots=True)
class PositionView:
    position_id: int
    symbol: str
    side: str
    qty: Decimal
    entry_price: Decimal
    mark: Decimal | None
    unrealised: Decimal | None
    fees: Decimal


@dataclass(frozen=True, slots=True)
class ClosedView:
    position_id: int
    symbol: str
    side: str
    qty: Decimal
    entry_price: Decimal
    exit_price: Decimal
    fees: Decimal
    realised_pnl: Decimal
    exit_ts: int


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order that is not finished: resting (limit), in flight (latency), or unknown (live)."""

    client_id: str
    symbol: str
    side: str
    qty: Decimal
    filled: Decimal
    limit_price: Decimal | None
    state: str  # SENT / OPEN / UNKNOWN


@dataclass(frozen=True, slots=True)
class Marker:
    ts: int
    price: float
    side: str  # BUY / SELL
    executed: bool = True


@dataclass(frozen=True, slots=True)
class Candle:
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class DeskSnapshot:
    seq: int
    now_ns: int
    mode: str  # PAPER / LIVE / REPLAY ×10
    primary: str
    symbols: tuple[SymbolView, ...]
    chart_tf: str
    candles: tuple[Candle, ...]  # primary, chart timeframe, oldest first (open bar last)
    seconds: tuple[Candle, ...]  # primary, 1 s bars
    fill_markers: tuple[Marker, ...]
    signal_markers: tuple[Marker, ...]
    imbalance: tuple[float, ...]  # top-5 book imbalance per second
    positions: tuple[PositionView, ...]
    closed: tuple[ClosedView, ...]  # newest last
    realised_pnl: Decimal
    unrealised_pnl: Decimal
    fees: Decimal
    balance: Decimal
    order_notional: Decimal
    trading_state: str
    auto_trade: bool
    training: bool
    log: tuple[LogLine, ...]
    training_log: tuple[LogLine, ...]
    models: tuple[dict[str, object], ...]
    models_note: str  # why there are no automatic decisions, when there are none
    feed: dict[str, object] = field(default_factory=dict)  # per-stream state, reconnects, ...
    replay: dict[str, object] = field(default_factory=dict)  # speed, paused, progress, done
    counters: dict[str, int] = field(default_factory=dict)
    device: str = ""
    banner: str = ""  # HALTED / STALE / disconnected, shown across the desk
    trading_reason: str = ""  # why trading is REDUCING / HALTED
    open_orders: tuple[OrderView, ...] = ()
    live_confirmation: str = ""  # the phrase to type before live orders go out ("" = nothing to confirm)
    run_mode: str = ""  # how the engine runs: live / replay / backtest (``mode`` is the label shown)
    # The quantity the next manual order on the primary would have at the current mid,
    # rounded to the step; None when there is no price yet (or it rounds below one step).
    order_qty: Decimal | None = None

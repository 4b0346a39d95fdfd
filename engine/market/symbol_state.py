"""Everything the engine knows about one symbol: its book, bars, ticks, filters, features."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from engine.core.symbols import SymbolFilters
from engine.market.bars import BarBuilder, TickCache
from engine.market.book import SyncedBook
from engine.market.features import BarFeatures


@dataclass
class SymbolState:
    """Everything the engine knows about one symbol."""

    symbol: str
    book: SyncedBook
    bars: BarBuilder
    ticks: TickCache
    filters: SymbolFilters
    features: dict[str, BarFeatures] = field(default_factory=dict)
    messages: int = 0
    trades: int = 0
    duplicate_trades: int = 0
    bbo_updates: int = 0
    last_trade_id: int = -1
    last_price: Decimal | None = None
    first_price: Decimal | None = None
    last_recv_ns: int = 0
    last_event_ns: int = 0
    imbalance: deque[float] = field(default_factory=lambda: deque(maxlen=300))

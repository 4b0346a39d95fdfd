"""Everything the engine knows about one symbol: its book, bars, ticks, filters, features."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from engine.core.symbols import SymbolFilters
from engine.market.bars import BarBuilder, TickCache
from engine.market.book import SyncedBook
from engine.market.features import BarFeatures

#: Trade ids remembered per symbol to recognise a duplicate (about a minute of a busy
#: Binance symbol). A trade that arrives again within this many later trades is applied
#: once; lines reordered by less than this are each applied once and never dropped.
RECENT_TRADE_IDS = 50_000


class RecentTradeIds:
    """The last ``size`` trade ids applied, as a set with a FIFO of arrival order.

    Unlike "keep the highest id", a trade that arrives after later ones (a reordered line,
    a merge of recordings) is applied, and an id seen once can never hide other trades.
    """

    __slots__ = ("_ids", "_order", "size")

    def __init__(self, size: int = RECENT_TRADE_IDS) -> None:
        self.size = size
        self._ids: set[int] = set()
        self._order: deque[int] = deque()

    def add(self, trade_id: int) -> bool:
        """Remember ``trade_id``; False if it is already remembered (a duplicate)."""
        ids = self._ids
        if trade_id in ids:
            return False
        ids.add(trade_id)
        order = self._order
        order.append(trade_id)
        if len(order) > self.size:
            ids.discard(order.popleft())
        return True

    def __len__(self) -> int:
        return len(self._order)


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
    last_trade_id: int = -1  # the highest trade id applied (the newest trade)
    recent_trade_ids: RecentTradeIds = field(default_factory=RecentTradeIds)
    last_price: Decimal | None = None
    first_price: Decimal | None = None
    last_recv_ns: int = 0
    last_event_ns: int = 0
    imbalance: deque[float] = field(default_factory=lambda: deque(maxlen=300))

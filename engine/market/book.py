"""L2 order book per symbol, synced by Binance's documented local-book procedure.

1. Diffs that arrive before the REST snapshot are buffered.
2. Buffered diffs with ``u <= lastUpdateId`` are dropped (stale).
3. The first applied diff must straddle the snapshot: ``U <= lastUpdateId + 1 <= u``.
4. Every later diff must continue the chain: ``U == previous u + 1``; otherwise the
   book is discarded (gap) and a new snapshot is requested.

State is ``SYNCING`` until a snapshot has been joined to the diff chain, ``LIVE`` while
the chain holds, ``STALE`` when the feed has gone quiet or disconnected.

A crossed or locked book (best bid >= best ask) is not a book: Binance's matching engine
never leaves one, so a diff that produces it (a bad diff with a valid id chain, or a
book that was wrong already) is counted, the book is discarded and goes ``STALE`` until a
new snapshot is joined, exactly as after a gap (live: a REST resnapshot; replay: the next
recorded snapshot). Nothing trades, decides or trains on it meanwhile (none of them act
on a book that is not ``LIVE``), and a ``LIVE`` book is never crossed.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from engine.core.events import BestBidAsk, BookDelta, BookSnapshot, BookState, Level

#: Diffs kept while waiting for a snapshot (about 100 s of @100ms updates).
MAX_BUFFERED = 1000


@dataclass
class BookCounters:
    updates: int = 0  # diffs applied
    snapshots: int = 0
    resyncs: int = 0  # snapshots requested after the first (gap, reconnect, stale)
    gaps: int = 0
    stale_dropped: int = 0  # diffs older than the snapshot
    crossed: int = 0  # diffs (or snapshots) that left best bid >= best ask: each discarded the book
    buffered_overflow: int = 0
    stale_snapshots: int = 0  # snapshots older than every buffered diff (refetched)


class OrderBook:
    """Price → quantity maps plus sorted price lists (ascending) for best prices and top-N.

    A level update that changes only a size touches the dict alone; new and deleted
    prices also bisect into the sorted list (C-level memmove on ~1,000 items).
    """

    __slots__ = ("_ask_px", "_bid_px", "asks", "bids")

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self._bid_px: list[Decimal] = []  # ascending: best bid last
        self._ask_px: list[Decimal] = []  # ascending: best ask first

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bid_px.clear()
        self._ask_px.clear()

    def load(self, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> None:
        self.clear()
        self.bids.update((p, q) for p, q in bids if q)
        self.asks.update((p, q) for p, q in asks if q)
        self._bid_px = sorted(self.bids)
        self._ask_px = sorted(self.asks)

    @staticmethod
    def _apply_side(book: dict[Decimal, Decimal], prices: list[Decimal], levels: tuple[Level, ...]) -> None:
        for p, q in levels:
            if q:
                if p not in book:
                    insort(prices, p)
                book[p] = q
            elif book.pop(p, None) is not None:
                del prices[bisect_left(prices, p)]

    def apply(self, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> None:
        if bids:
            self._apply_side(self.bids, self._bid_px, bids)
        if asks:
            self._apply_side(self.asks, self._ask_px, asks)

    def best_bid(self) -> Decimal | None:
        return self._bid_px[-1] if self._bid_px else None

    def best_ask(self) -> Decimal | None:
        return self._ask_px[0] if self._ask_px else None

    def top_bids(self, n: int) -> list[Level]:
        bids = self.bids
        return [(p, bids[p]) for p in reversed(self._bid_px[-n:])] if n > 0 else []

    def top_asks(self, n: int) -> list[Level]:
        asks = self.asks
        return [(p, asks[p]) for p in self._ask_px[:n]]

    def is_crossed(self) -> bool:
        return bool(self._bid_px and self._ask_px and self._bid_px[-1] >= self._ask_px[0])


class SyncedBook:
    """One symbol's book plus the sync state machine. Feed it deltas and snapshots.

    ``request_snapshot`` is called whenever a (re)snapshot is needed; a live feed
    fetches one over REST, a replay simply waits for the next recorded one.
    """

    def __init__(
        self,
        symbol: str,
        request_snapshot: Callable[[str], None] | None = None,
        on_state: Callable[[str, BookState, str], None] | None = None,
    ) -> None:
        self.symbol = symbol
        self.book = OrderBook()
        self.state = BookState.SYNCING
        self.last_update_id = 0
        self.counters = BookCounters()
        self.bbo: BestBidAsk | None = None
        self.last_event_ns = 0
        self._buffer: list[BookDelta] = []
        self._joined = False  # the first diff after the snapshot has been applied
        self._request_snapshot = request_snapshot
        self._on_state = on_state
        self._snapshot_requested = False

    # -- state -------------------------------------------------------------------------

    def _set_state(self, state: BookState, reason: str) -> None:
        if state is not self.state:
            self.state = state
            if self._on_state:
                self._on_state(self.symbol, state, reason)

    def _ask_snapshot(self) -> None:
        if not self._snapshot_requested:
            self._snapshot_requested = True
            if self.counters.snapshots > 0:
                self.counters.resyncs += 1
            if self._request_snapshot:
                self._request_snapshot(self.symbol)

    def resync(self, reason: str, state: BookState = BookState.SYNCING) -> None:
        """Discard the book and start over (gap, reconnect: ``SYNCING``; crossed: ``STALE``)."""
        self.book.clear()
        self._buffer.clear()
        self._joined = False
        self.last_update_id = 0
        self._set_state(state, reason)
        self._ask_snapshot()

    def mark_stale(self, reason: str) -> None:
        if self.state is BookState.LIVE:
            self._set_state(BookState.STALE, reason)

    def mark_fresh(self) -> None:
        if self.state is BookState.STALE and self._joined:
            self._set_state(BookState.LIVE, "data resumed")

    # -- input -------------------------------------------------------------------------

    def on_delta(self, d: BookDelta) -> None:
        self.last_event_ns = d.ts_event
        if not self._joined:
            if len(self._buffer) >= MAX_BUFFERED:
                self._buffer.pop(0)
                self.counters.buffered_overflow += 1
            self._buffer.append(d)
            if self.last_update_id == 0:
                self._ask_snapshot()
            else:
                self._drain_buffer()
            return
        if self._continue_chain(d) and self.state is BookState.STALE:
            self.mark_fresh()

    def _continue_chain(self, d: BookDelta) -> bool:
        """Apply a diff to a joined book; False when the book was discarded (gap, crossed)."""
        if d.final_id <= self.last_update_id:
            self.counters.stale_dropped += 1  # duplicate or reordered diff already covered
            return True
        if d.first_id != self.last_update_id + 1:
            self.counters.gaps += 1
            self.resync(f"gap: expected U={self.last_update_id + 1}, got U={d.first_id}")
            self._buffer.append(d)
            return False
        return self._apply(d)

    def on_snapshot(self, s: BookSnapshot) -> None:
        self.counters.snapshots += 1
        self._snapshot_requested = False
        if self._joined:
            # An unrequested snapshot while LIVE (e.g. a recorded one): adopt it only if
            # it is newer, then continue the chain from it.
            if s.last_update_id <= self.last_update_id:
                return
            self._joined = False
        self.book.load(s.bids, s.asks)
        if self.book.is_crossed():  # a snapshot no exchange would send: never trade on it
            self._crossed(f"snapshot {s.last_update_id}")
            return
        self.last_update_id = s.last_update_id
        self._drain_buffer()

    def on_bbo(self, t: BestBidAsk) -> None:
        self.bbo = t

    def _drain_buffer(self) -> None:
        buf, self._buffer = self._buffer, []
        for i, d in enumerate(buf):
            if self._joined:
                if not self._continue_chain(d):  # a gap or a crossed book: the rest waits for a new snapshot
                    self._buffer.extend(buf[i + 1:])
                    return
                continue
            if d.final_id <= self.last_update_id:
                self.counters.stale_dropped += 1
                continue
            if d.first_id <= self.last_update_id + 1 <= d.final_id:
                self._joined = True
                if not self._apply(d):  # the snapshot with its first diff is crossed
                    self._buffer.extend(buf[i + 1:])
                    return
                continue
            # The snapshot is older than the oldest diff we hold: it cannot be joined.
            # Keep the diffs and ask for a newer snapshot.
            self.counters.stale_snapshots += 1
            self._buffer = buf[i:]
            self.book.clear()
            self.last_update_id = 0
            self._ask_snapshot()
            return
        if self._joined:  # LIVE only once every buffered diff is applied and the book is sound
            self._set_state(BookState.LIVE, "synced")

    def _apply(self, d: BookDelta) -> bool:
        """Apply one diff of the chain; False when it left the book crossed (then discarded)."""
        self.book.apply(d.bids, d.asks)
        self.last_update_id = d.final_id
        self.counters.updates += 1
        if self.book.is_crossed():
            self._crossed(f"update {d.final_id}")
            return False
        return True

    def _crossed(self, what: str) -> None:
        self.counters.crossed += 1
        self.resync(f"crossed book after {what}: best bid {self.book.best_bid()} >= best ask {self.book.best_ask()}; "
                    "discarded until a new snapshot joins", BookState.STALE)

    # -- views -------------------------------------------------------------------------

    def mid(self) -> Decimal | None:
        b, a = self.best_bid(), self.best_ask()
        if b is None or a is None:
            return None
        return (b + a) / 2

    def best_bid(self) -> Decimal | None:
        return self.book.best_bid()

    def best_ask(self) -> Decimal | None:
        return self.book.best_ask()

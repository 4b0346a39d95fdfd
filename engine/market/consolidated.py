"""The consolidated order book (COB): one book per venue, merged into one view.

The primary venue's book is the engine's own :class:`~engine.market.book.SyncedBook` (attached
by reference, so the view is always current); other venues (ccxt.pro) push their top
levels as they change. Only venues whose book is ``LIVE`` are merged: a stale or
syncing venue drops out of the view and is listed as such, never shown as live. A venue
whose own book is crossed or locked (its best bid >= its best ask) is invalid: counted,
``STALE`` until it pushes an uncrossed book. Two venues crossing *each other* is not an
error (an arbitrage) and is shown as such.
Prices and sizes stay ``Decimal``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal

from engine.core.events import BookState, Level
from engine.market.book import SyncedBook


@dataclass(frozen=True, slots=True)
class MergedLevel:
    price: Decimal
    qty: Decimal  # summed over the venues quoting this price
    by_venue: tuple[tuple[str, Decimal], ...]


@dataclass(frozen=True, slots=True)
class MergedBook:
    symbol: str
    bids: tuple[MergedLevel, ...]  # best first
    asks: tuple[MergedLevel, ...]
    venues: tuple[str, ...]  # venues merged (LIVE)
    left_out: tuple[tuple[str, str], ...]  # (venue, state) not merged

    @property
    def best_bid(self) -> Decimal | None:
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return self.asks[0].price if self.asks else None

    @property
    def crossed(self) -> bool:
        """Venues can cross each other (an arbitrage, not an error): worth showing."""
        return self.best_bid is not None and self.best_ask is not None and self.best_bid >= self.best_ask


@dataclass
class VenueBook:
    """A venue's top levels as last pushed (best first)."""

    venue: str
    bids: tuple[Level, ...] = ()
    asks: tuple[Level, ...] = ()
    state: BookState = BookState.SYNCING
    reason: str = ""
    updates: int = 0
    crossed: int = 0  # pushed books that were crossed or locked (left out of the view)
    last_mono: float | None = None


@dataclass
class ConsolidatedBook:
    """All venues' books for one symbol (engine symbol key, e.g. ``ETHUSDT``)."""

    symbol: str
    _synced: dict[str, SyncedBook] = field(default_factory=dict)
    _pushed: dict[str, VenueBook] = field(default_factory=dict)

    def attach(self, venue: str, book: SyncedBook) -> None:
        """Merge a synced book by reference (the primary venue)."""
        self._synced[venue] = book

    def update(self, venue: str, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> None:
        """Replace a venue's levels (best first). An update means the venue is live, unless
        its own book is crossed or locked: then it is STALE until an uncrossed one comes."""
        vb = self._pushed.setdefault(venue, VenueBook(venue))
        vb.bids, vb.asks = bids, asks
        vb.updates += 1
        vb.last_mono = time.monotonic()
        if bids and asks and bids[0][0] >= asks[0][0]:
            vb.crossed += 1
            vb.state, vb.reason = BookState.STALE, f"crossed book: best bid {bids[0][0]} >= best ask {asks[0][0]}"
            return
        vb.state, vb.reason = BookState.LIVE, ""

    def set_state(self, venue: str, state: BookState, reason: str = "") -> None:
        vb = self._pushed.setdefault(venue, VenueBook(venue))
        vb.state, vb.reason = state, reason

    def mark_stale_older_than(self, max_age_s: float, now: float | None = None) -> list[str]:
        """Pushed venues silent for longer than ``max_age_s`` become STALE; returns them."""
        now = time.monotonic() if now is None else now
        out = []
        for vb in self._pushed.values():
            if vb.state is BookState.LIVE and vb.last_mono is not None and now - vb.last_mono > max_age_s:
                vb.state, vb.reason = BookState.STALE, f"no update for {now - vb.last_mono:.1f} s"
                out.append(vb.venue)
        return out

    def venue_levels(self, venue: str, depth: int = 20) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        """One venue's own top levels (best first), whatever its state."""
        if venue in self._synced:
            book = self._synced[venue].book
            return tuple(book.top_bids(depth)), tuple(book.top_asks(depth))
        vb = self._pushed.get(venue)
        return (vb.bids[:depth], vb.asks[:depth]) if vb is not None else ((), ())

    def pushed(self, venue: str) -> VenueBook | None:
        """A pushed venue's book as last pushed (its state, reason and counters)."""
        return self._pushed.get(venue)

    def venue_states(self) -> dict[str, str]:
        out = {v: b.state.value for v, b in self._synced.items()}
        out.update({v: b.state.value for v, b in self._pushed.items()})
        return out

    def merged(self, depth: int = 20) -> MergedBook:
        """The top ``depth`` merged levels a side over the LIVE venues."""
        sides: list[tuple[str, tuple[Level, ...], tuple[Level, ...]]] = []
        left_out: list[tuple[str, str]] = []
        for venue, sb in self._synced.items():
            if sb.state is BookState.LIVE:
                sides.append((venue, tuple(sb.book.top_bids(depth)), tuple(sb.book.top_asks(depth))))
            else:
                left_out.append((venue, sb.state.value))
        for venue, vb in self._pushed.items():
            if vb.state is BookState.LIVE:
                sides.append((venue, vb.bids[:depth], vb.asks[:depth]))
            else:
                left_out.append((venue, vb.state.value))
        return MergedBook(
            self.symbol,
            _merge([(v, b) for v, b, _ in sides], depth, reverse=True),
            _merge([(v, a) for v, _, a in sides], depth, reverse=False),
            tuple(v for v, _, _ in sides),
            tuple(left_out),
        )


def _merge(books: list[tuple[str, tuple[Level, ...]]], depth: int, *, reverse: bool) -> tuple[MergedLevel, ...]:
    by_price: dict[Decimal, dict[str, Decimal]] = {}
    for venue, levels in books:
        for price, qty in levels:
            if qty > 0:
                slot = by_price.setdefault(price, {})
                slot[venue] = slot.get(venue, Decimal(0)) + qty
    prices = sorted(by_price, reverse=reverse)[:depth]
    return tuple(
        MergedLevel(p, sum(by_price[p].values(), Decimal(0)), tuple(sorted(by_price[p].items()))) for p in prices
    )

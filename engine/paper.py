"""Paper execution: market orders walk the L2 book level by level and pay the taker fee.

Each level taken is one fill (as exchanges report them), so every fill's price is a
real book price and PnL stays exact. The book is not consumed: the next order sees the
book as the exchange next reports it. A book thinner than the order fills partially.
"""

from __future__ import annotations

from decimal import Decimal

from engine.book import OrderBook
from engine.events import Level, OrderFilled, Side

ZERO = Decimal(0)


def walk_book(levels: list[Level], qty: Decimal) -> list[Level]:
    """Take ``qty`` from price-ordered ``levels``: the (price, qty) taken at each level."""
    left = qty
    taken: list[Level] = []
    for price, size in levels:
        take = size if size < left else left
        taken.append((price, take))
        left -= take
        if left == 0:
            break
    return taken


def vwap(fills: list[OrderFilled]) -> Decimal:
    qty = sum((f.qty for f in fills), ZERO)
    return sum((f.qty * f.price for f in fills), ZERO) / qty if qty else ZERO


class PaperExecutor:
    """Fills market orders against a book. ``depth`` bounds how many levels are walked."""

    def __init__(self, taker_fee: Decimal, depth: int = 200) -> None:
        self.taker_fee = taker_fee
        self.depth = depth
        self._seq = 0

    def market(self, symbol: str, side: Side, qty: Decimal, book: OrderBook, ts: int) -> list[OrderFilled]:
        levels = book.top_asks(self.depth) if side is Side.BUY else book.top_bids(self.depth)
        taken = walk_book(levels, qty)
        if not taken:
            return []
        self._seq += 1
        order_id = f"P{self._seq}"
        touch = levels[0][0]
        fills = []
        for i, (price, q) in enumerate(taken, 1):
            slip = float((price - touch) / touch) * 1e4 * side.sign
            fills.append(OrderFilled(order_id, f"{order_id}-{i}", symbol, side, q, price,
                                     price * q * self.taker_fee, ts, "taker", slip))
        return fills

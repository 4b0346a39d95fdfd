"""Paper execution: a simulated venue that fills against the live L2 book.

- Market orders walk the book level by level; each level taken is one fill (as exchanges
  report them), so every fill price is a real book price and PnL stays exact. The fill
  pays the taker fee and reports its slippage from the touch. A book thinner than the
  order fills partially and the rest expires, as a Binance market order does.
- Latency: an order reaches the venue ``latency`` nanoseconds of market time after it was
  sent, and fills against the book as it is then (the engine calls ``poll`` before it
  applies each market message, so the book seen is the one at the arrival time).
- Limit orders take whatever is marketable on arrival (taker), then rest; a resting order
  fills only when a market trade prints *through* its price (strictly better than the
  limit), at the limit, as maker, for at most the traded quantity. A trade at exactly the
  limit does not fill it: the queue position is unknown, so we assume we were behind.
- The book is not consumed: the next order sees the book as the exchange next reports it.
- Only a LIVE, uncrossed book fills: a buy takes asks above the best bid, a sell bids
  below the best ask, so a fill never crosses the opposite best. (A synced book that
  crosses is discarded and is not LIVE; the check here holds for any book handed in.)

Precision and minimums are checked before an order gets here (``engine.execution.risk``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from engine.core.events import BookState, Level, OrderFilled, Side, Trade
from engine.execution.executor import ExecReport, ExecutorPorts, OpenOrder, OrderRequest, OrderState, OrderType
from engine.market.book import SyncedBook

ZERO = Decimal(0)


def walk_book(levels: list[Level], qty: Decimal) -> list[Level]:
    """Take ``qty`` from price-ordered ``levels``: the (price, qty) taken at each level."""
    left = qty
    taken: list[Level] = []
    for price, size in levels:
        if size <= 0:
            continue
        take = size if size < left else left
        taken.append((price, take))
        left -= take
        if left == 0:
            break
    return taken


def vwap(fills: list[OrderFilled] | tuple[OrderFilled, ...]) -> Decimal:
    qty = sum((f.qty for f in fills), ZERO)
    return sum((f.qty * f.price for f in fills), ZERO) / qty if qty else ZERO


@dataclass
class _Resting:
    order: OrderRequest
    remaining: Decimal
    n_fills: int  # fills so far, so fill ids stay unique across restarts


class PaperExecutor:
    """The paper venue. ``book_of(symbol)`` gives the engine's synced book for a symbol."""

    name = "paper"

    def __init__(
        self,
        taker_fee: Decimal,
        maker_fee: Decimal | None = None,
        latency_ns: int = 0,
        book_of: Callable[[str], SyncedBook | None] | None = None,
        depth: int = 200,
    ) -> None:
        self.taker_fee = taker_fee
        self.maker_fee = taker_fee if maker_fee is None else maker_fee
        self.latency_ns = latency_ns
        self.depth = depth
        self.book_of = book_of  # else the engine's books, from bind()
        self.on_report: Callable[[ExecReport], None] | None = None
        self._queue: list[tuple[int, int, OrderRequest]] = []  # (arrival ns, seq, order)
        self._seq = 0
        self._resting: dict[str, _Resting] = {}
        self.orders_received = 0  # orders that reached the venue (risk tests count these)

    # ------------------------------------------------------------------ interface

    def bind(self, ports: ExecutorPorts) -> None:
        self.on_report = ports.on_report
        if self.book_of is None:
            self.book_of = ports.book_of

    def submit(self, order: OrderRequest, now: int) -> list[ExecReport]:
        if self.latency_ns <= 0:
            return [self._arrive(order, now)]
        self._seq += 1
        heapq.heappush(self._queue, (now + self.latency_ns, self._seq, order))
        return []

    def poll(self, now: int) -> list[ExecReport]:
        out = []
        while self._queue and self._queue[0][0] <= now:
            due, _, order = heapq.heappop(self._queue)
            out.append(self._arrive(order, due))
        return out

    def cancel(self, client_id: str, now: int) -> list[ExecReport]:
        for i, (_, _, order) in enumerate(self._queue):
            if order.client_id == client_id:
                # Still on its way: it never reaches the book.
                self._queue.pop(i)
                heapq.heapify(self._queue)
                return [ExecReport(client_id, OrderState.CANCELED, now, reason="canceled before it reached the venue")]
        if self._resting.pop(client_id, None) is not None:
            return [ExecReport(client_id, OrderState.CANCELED, now, reason="canceled")]
        return []

    def on_trade(self, trade: Trade) -> list[ExecReport]:
        if not self._resting:
            return []
        avail = trade.qty
        out = []
        for cid, r in list(self._resting.items()):
            o = r.order
            if o.symbol != trade.symbol or o.limit_price is None or avail <= 0:
                continue
            through = trade.price < o.limit_price if o.side is Side.BUY else trade.price > o.limit_price
            if not through:
                continue
            q = min(r.remaining, avail)
            avail -= q
            r.remaining -= q
            r.n_fills += 1
            f = OrderFilled(cid, f"{cid}-{r.n_fills}", o.symbol, o.side, q, o.limit_price,
                            o.limit_price * q * self.maker_fee, trade.ts_recv, "maker", 0.0)
            if r.remaining == 0:
                del self._resting[cid]
                out.append(ExecReport(cid, OrderState.FILLED, trade.ts_recv, (f,)))
            else:
                out.append(ExecReport(cid, OrderState.OPEN, trade.ts_recv, (f,), reason="partly filled, resting"))
        return out

    def busy(self) -> bool:
        return bool(self._queue or self._resting)

    def restore(self, order: OpenOrder) -> None:
        """A resting limit order outlives the process (as it would on an exchange)."""
        if order.request.order_type is OrderType.LIMIT and order.state is OrderState.OPEN and order.remaining > 0:
            self._resting[order.request.client_id] = _Resting(order.request, order.remaining, len(order.fill_ids))

    def resting(self) -> list[tuple[OrderRequest, Decimal]]:
        return [(r.order, r.remaining) for r in self._resting.values()]

    # ------------------------------------------------------------------ the matching

    def _arrive(self, o: OrderRequest, ts: int) -> ExecReport:
        self.orders_received += 1
        sb = self.book_of(o.symbol) if self.book_of is not None else None
        if sb is None or sb.state is not BookState.LIVE:
            state = sb.state.value if sb is not None else "missing"
            return ExecReport(o.client_id, OrderState.REJECTED, ts, reason=f"book {state} when the order arrived")
        book = sb.book
        if book.is_crossed():
            return ExecReport(o.client_id, OrderState.REJECTED, ts,
                              reason=f"book crossed when the order arrived (bid {book.best_bid()} >= ask {book.best_ask()})")
        levels = book.top_asks(self.depth) if o.side is Side.BUY else book.top_bids(self.depth)
        if not levels:
            return ExecReport(o.client_id, OrderState.REJECTED, ts, reason="empty book")
        touch = levels[0][0]
        if o.order_type is OrderType.LIMIT and o.limit_price is not None:
            lim = o.limit_price
            levels = [lv for lv in levels if (lv[0] <= lim if o.side is Side.BUY else lv[0] >= lim)]
        taken = walk_book(levels, o.qty)
        fills = []
        for i, (price, q) in enumerate(taken, 1):
            slip = float((price - touch) / touch) * 1e4 * o.side.sign
            fills.append(OrderFilled(o.client_id, f"{o.client_id}-{i}", o.symbol, o.side, q, price,
                                     price * q * self.taker_fee, ts, "taker", slip))
        filled = sum((f.qty for f in fills), ZERO)
        if filled == o.qty:
            return ExecReport(o.client_id, OrderState.FILLED, ts, tuple(fills))
        if o.order_type is OrderType.LIMIT:
            self._resting[o.client_id] = _Resting(o, o.qty - filled, len(fills))
            why = f"resting at {o.limit_price}" + (f" after {filled} filled on arrival" if fills else "")
            return ExecReport(o.client_id, OrderState.OPEN, ts, tuple(fills), reason=why)
        if not fills:
            return ExecReport(o.client_id, OrderState.REJECTED, ts, reason="empty book")
        return ExecReport(o.client_id, OrderState.CANCELED, ts, tuple(fills),
                          reason=f"book thinner than the order: filled {filled} of {o.qty}, the rest expired")

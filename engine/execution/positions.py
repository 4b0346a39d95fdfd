"""Positions and realised PnL in exact arithmetic.

BUY when flat opens long; SELL when long reduces or closes it; SELL when flat opens a
short if shorting is allowed. A fill larger than the open position closes it and opens
the rest the other way. Fees are in quote currency; realised PnL is after fees.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

from engine.core.events import OrderFilled, PositionClosed, PositionOpened, Side

ZERO = Decimal(0)


@dataclass
class Position:
    position_id: int
    symbol: str
    side: Side
    qty: Decimal
    entry_price: Decimal  # average entry
    entry_ts: int
    fees: Decimal = ZERO  # entry fees plus the share of exit fees so far
    realised: Decimal = ZERO  # gross PnL realised by partial reductions
    decision_id: int | None = None
    opened_qty: Decimal = ZERO
    exit_notional: Decimal = ZERO
    exit_qty: Decimal = ZERO
    entry_notional: Decimal = ZERO  # sum of price x qty of the fills that opened or added

    def unrealised(self, mark: Decimal) -> Decimal:
        return (mark - self.entry_price) * self.qty * self.side.sign

    def view(self) -> Position:
        return replace(self)


@dataclass
class Portfolio:
    """Open positions per symbol and the closed-trade record, updated by fills."""

    allow_short: bool = True
    positions: dict[str, Position] = field(default_factory=dict)
    closed: list[PositionClosed] = field(default_factory=list)
    realised_pnl: Decimal = ZERO  # after fees, closed positions only
    fees: Decimal = ZERO  # every fee paid
    next_position_id: int = 1

    def apply_fill(self, f: OrderFilled, decision_id: int | None = None) -> list[PositionOpened | PositionClosed]:
        """Apply one fill; return the position events it caused (state updated first)."""
        self.fees += f.fee
        out: list[PositionOpened | PositionClosed] = []
        pos = self.positions.get(f.symbol)
        qty, price, fee = f.qty, f.price, f.fee
        if pos is not None and pos.side is f.side:
            # Adding to the position: new average entry.
            total = pos.qty + qty
            pos.entry_price = (pos.entry_price * pos.qty + price * qty) / total
            pos.qty = total
            pos.opened_qty += qty
            pos.entry_notional += price * qty
            pos.fees += fee
            return out
        if pos is not None:
            closing = min(qty, pos.qty)
            share = fee * closing / qty
            pos.realised += (price - pos.entry_price) * closing * pos.side.sign
            pos.fees += share
            pos.exit_notional += price * closing
            pos.exit_qty += closing
            pos.qty -= closing
            qty -= closing
            fee -= share
            if pos.qty == 0:
                del self.positions[f.symbol]
                # Flat again: everything bought was sold, so the gross PnL is the cash flow,
                # exit minus entry notional - exact, with no average price (a division) in it.
                gross = (pos.exit_notional - pos.entry_notional) * pos.side.sign
                pnl = gross - pos.fees
                self.realised_pnl += pnl
                ev = PositionClosed(
                    pos.position_id, pos.symbol, pos.side, pos.opened_qty, pos.entry_price,
                    pos.exit_notional / pos.exit_qty, pos.entry_ts, f.ts, pos.fees, pnl, pos.decision_id,
                )
                self.closed.append(ev)
                out.append(ev)
            if qty == 0:
                return out
            if not self.allow_short and f.side is Side.SELL:
                # The remainder would open a short; without shorting it is simply unfilled.
                return out
        elif f.side is Side.SELL and not self.allow_short:
            raise ValueError("SELL while flat needs allow_short")
        pid = self.next_position_id
        self.next_position_id += 1
        self.positions[f.symbol] = Position(pid, f.symbol, f.side, qty, price, f.ts, fee,
                                            decision_id=decision_id, opened_qty=qty, entry_notional=price * qty)
        out.append(PositionOpened(pid, f.symbol, f.side, qty, price, f.ts, decision_id))
        return out

    def unrealised(self, marks: dict[str, Decimal]) -> Decimal:
        total = ZERO
        for sym, pos in self.positions.items():
            mark = marks.get(sym)
            if mark is not None:
                total += pos.unrealised(mark)
        return total

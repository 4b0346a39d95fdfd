"""Exchange symbol filters (tick size, step size, minimum notional) and quantity rounding.

Live, the feed fills these from ``/api/v3/exchangeInfo``; in replay the defaults below
(Binance spot's values for the sample symbols) apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal


@dataclass(frozen=True)
class SymbolFilters:
    symbol: str
    tick_size: Decimal = Decimal("0.01")
    step_size: Decimal = Decimal("0.00001")
    min_qty: Decimal = Decimal("0.00001")
    min_notional: Decimal = Decimal("5")
    max_qty: Decimal = Decimal("9000")  # LOT_SIZE maxQty on Binance spot for the sample symbols

    def round_qty(self, qty: Decimal) -> Decimal:
        """Round down to the step size (never up: an order must not grow)."""
        return (qty / self.step_size).to_integral_value(rounding=ROUND_DOWN) * self.step_size

    def round_price(self, price: Decimal) -> Decimal:
        return (price / self.tick_size).to_integral_value(rounding=ROUND_DOWN) * self.tick_size


KNOWN: dict[str, SymbolFilters] = {
    "BTCUSDT": SymbolFilters("BTCUSDT", Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), Decimal("5")),
    "ETHUSDT": SymbolFilters("ETHUSDT", Decimal("0.01"), Decimal("0.0001"), Decimal("0.0001"), Decimal("5")),
}


def default_filters(symbol: str) -> SymbolFilters:
    return KNOWN.get(symbol, SymbolFilters(symbol))


def display_symbol(symbol: str) -> str:
    """``ETHUSDT`` → ``ETH/USDT`` for the usual quote currencies."""
    for quote in ("USDT", "USDC", "FDUSD", "BUSD", "USD", "BTC", "ETH", "EUR"):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return f"{symbol[: -len(quote)]}/{quote}"
    return symbol

"""Helpers for the live-feed tests: run the real driver against the fake exchange, probe the
risk gate while books are not LIVE, and report RELIABILITY.md figures to a scorecard."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.core import settings
from engine.core.engine import Engine
from engine.core.events import BookState, BookStateChanged, OrderDenied, OrderFilled, Side, SubmitOrder
from engine.execution.ledger import Ledger
from engine.kernel import live_session
from engine.market.recorder import Recorder
from engine.runs.live_driver import LiveFeedDriver
from engine.testing.fake_exchange import FakeExchange, Scenario
from tests.support.config import settings_for
from tests.support.scorecard import record

#: Fast retries so a fault costs milliseconds, not seconds.
FAST = ["exchange.backoff_base_s=0.02", "exchange.backoff_max_s=0.3", "exchange.timeout_s=5.0"]


def live_settings(tmp: Path, fx: FakeExchange | None = None, *extra: str) -> settings.Settings:
    over = ["models.enabled=[]", *FAST]
    if fx is not None:
        over += [f'exchange.ws_url="{fx.ws_url}"', f'exchange.rest_url="{fx.rest_url}"']
    return settings_for(tmp / "data", *over, *extra)


@dataclass
class OrderProbe:
    """Tries a small market order every time a book leaves LIVE (and when it comes back).

    Every attempt goes through the engine's real command path; the driver counts fills
    that happen while the book is not LIVE (must stay 0), this counts the denials.
    """

    engine: Engine
    attempts_non_live: int = 0
    attempts_live: int = 0
    denied_not_live: int = 0
    denials: list[str] = field(default_factory=list)
    fills: int = 0
    states: list[tuple[str, str, str]] = field(default_factory=list)  # (symbol, state, reason)

    def __post_init__(self) -> None:
        self.engine.bus.on(BookStateChanged, self._on_state)
        self.engine.bus.on(OrderDenied, self._on_denied)
        self.engine.bus.on(OrderFilled, self._on_fill)

    def _on_state(self, ev: BookStateChanged) -> None:
        self.states.append((ev.symbol, ev.state.value, ev.reason))
        if ev.state is BookState.LIVE:
            self.attempts_live += 1
        else:
            self.attempts_non_live += 1
        # About 50 USDT: above the exchange minimum, far below the risk caps.
        qty = Decimal("0.001") if ev.symbol.startswith("BTC") else Decimal("0.02")
        self.engine.submit(SubmitOrder(ev.symbol, Side.BUY, qty, "manual"))

    def _on_denied(self, ev: OrderDenied) -> None:
        self.denials.append(ev.reason)
        if "not LIVE" in ev.reason:
            self.denied_not_live += 1

    def _on_fill(self, ev: OrderFilled) -> None:
        self.fills += 1


@dataclass
class LiveRun:
    fx: FakeExchange
    engine: Engine
    driver: LiveFeedDriver
    probe: OrderProbe

    def summary(self) -> dict[str, Any]:
        s = self.engine.summary()
        s.update(self.driver.summary_extra())
        return s

    def book_matches_exchange(self, symbol: str, depth: int = 100) -> bool:
        bids, asks = self.fx.book_top(symbol, depth)
        book = self.engine.symbols[symbol].book.book
        return bids == book.top_bids(depth) and asks == book.top_asks(depth)


async def run_live(paths: list[Path], scenario: Scenario, tmp: Path, *extra: str, max_seconds: float = 60.0,
                   recorder: Recorder | None = None, until_closed: bool = True,
                   setup: Callable[[FakeExchange], dict[str, Any] | None] | None = None,
                   watch: Callable[[Engine, LiveFeedDriver], Awaitable[None]] | None = None) -> LiveRun:
    """Serve ``paths`` with ``scenario`` and run the live driver until the exchange is gone.

    ``setup(fx)`` may adjust the exchange and return extra ccxt venues; ``watch`` runs
    beside the driver (it is cancelled when the driver ends).
    """
    async with FakeExchange(paths, scenario) as fx:
        venues = setup(fx) if setup is not None else None
        cfg = live_settings(tmp, fx, *extra)
        session = live_session(cfg, models=False, ledger=Ledger.memory(), until_closed=until_closed,
                               max_seconds=max_seconds, recorder=recorder, venue_exchanges=venues)
        engine, driver = session.engine, session.live
        probe = OrderProbe(engine)
        watcher = asyncio.create_task(watch(engine, driver)) if watch is not None else None
        try:
            await driver.run()
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
    return LiveRun(fx, engine, driver, probe)


def report(row: str, **figures: Any) -> None:
    """A RELIABILITY.md figure: printed, shown at the end of the run, merged into $TRADEDESK_SCORECARD."""
    record(row, figures)

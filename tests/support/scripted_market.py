"""A constructed market for execution tests: an engine on a replay clock, fed Binance-shaped
book snapshots, diffs and trades that we write by hand (so every price is known)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.core.clock import ReplayClock
from engine.core.engine import Engine
from engine.core.events import NS_PER_MS, NS_PER_S, BookDelta, BookSnapshot, Trade
from engine.kernel import build_engine

T0 = 1_723_161_600 * NS_PER_S  # 2024-08-09 00:00 UTC


def D(x: Any) -> Decimal:
    return Decimal(str(x))


def levels(pairs: Any) -> tuple[tuple[Decimal, Decimal], ...]:
    return tuple((D(p), D(q)) for p, q in pairs)


class Market:
    """Drives ``engine`` like a feed: every message advances the clock, then is applied."""

    def __init__(self, engine: Engine, clock: ReplayClock, symbol: str = "ETHUSDT", t0: int = T0) -> None:
        self.engine = engine
        self.clock = clock
        self.symbol = symbol
        self.now = max(t0, clock.now_ns())
        self.uid = 1000
        self.trade_id = 0
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def _send(self, ev: Any) -> None:
        self.clock.advance(ev.ts_recv)
        self.engine.on_market(ev)

    def tick(self, ms: float = 1) -> int:
        self.now += int(ms * NS_PER_MS)
        return self.now

    def start(self, bids: Any, asks: Any) -> None:
        """Snapshot then a bridging diff: the book goes LIVE."""
        self.bids, self.asks = dict(levels(bids)), dict(levels(asks))
        ts = self.tick()
        self._send(BookSnapshot(self.symbol, self.uid, levels(bids), levels(asks), ts))
        self.delta((), ())

    def delta(self, bids: Any, asks: Any, ms: float = 1) -> None:
        ts = self.tick(ms)
        self.uid += 1
        b, a = levels(bids), levels(asks)
        for p, q in b:
            self.bids[p] = q
        for p, q in a:
            self.asks[p] = q
        self._send(BookDelta(self.symbol, self.uid, self.uid, b, a, ts, ts))

    def set_book(self, bids: Any, asks: Any, ms: float = 1) -> None:
        """Replace the whole book (old levels deleted in the same diff)."""
        nb, na = dict(levels(bids)), dict(levels(asks))
        db = [(p, D(0)) for p in self.bids if p not in nb] + list(nb.items())
        da = [(p, D(0)) for p in self.asks if p not in na] + list(na.items())
        self.delta(db, da, ms)
        self.bids = {p: q for p, q in nb.items() if q > 0}
        self.asks = {p: q for p, q in na.items() if q > 0}

    def trade(self, price: Any, qty: Any, buyer_is_maker: bool = True, ms: float = 1) -> None:
        ts = self.tick(ms)
        self.trade_id += 1
        self._send(Trade(self.symbol, self.trade_id, D(price), D(qty), buyer_is_maker, ts, ts))

    def idle(self, ms: float) -> None:
        """Let market time pass (an empty diff at the end of it)."""
        self.delta((), (), ms)


def make_engine(cfg: Any, *overrides: str, ledger: Any = None, executor: Any = None,
                mode: str = "replay") -> tuple[Engine, Market]:
    if overrides:
        cfg = cfg.with_overrides(list(overrides))
    clock = ReplayClock(T0)
    engine = build_engine(cfg, mode=mode, clock=clock, ledger=ledger, executor=executor)
    return engine, Market(engine, clock)

"""Any ccxt.pro venue behind the feed interface (``watch_order_book``, ``watch_trades``).

ccxt.pro keeps each venue's book in sync itself (snapshot plus diffs, per the venue's
rules) and reconnects inside the next ``watch_*`` call; this adapter turns its results
into queue items for the consolidated book and its exceptions into states:

- ``NetworkError`` (timeouts, rate limits, venue unavailable, bad nonce/checksum) and
  other ``ExchangeError`` s: the stream is STALE, back off with jitter, try again;
- ``BadSymbol``, ``BadRequest``, ``NotSupported``, ``AuthenticationError``: retrying cannot
  help, so that stream stops and the status says why.

Extra venues feed the COB view and its model only: the engine's bars, trades and paper
fills stay on the primary venue, whose trade ids and book procedure they follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import ccxt

from engine.core.events import BookState, Level
from engine.market.feeds.base import Backoff, FeedConfig, FeedCounters, Item, Kind, StreamStatus, cause_of, put, secs
from engine.market.parse import stream_symbol

log = logging.getLogger(__name__)

#: ccxt errors that no retry can fix.
FATAL = (ccxt.BadSymbol, ccxt.BadRequest, ccxt.NotSupported, ccxt.AuthenticationError)


def make_exchange(venue: str) -> Any:
    """A public (key-less) ccxt.pro client for ``venue`` (a ccxt id such as ``okx``)."""
    import ccxt.pro as ccxtpro

    cls = getattr(ccxtpro, venue, None)
    if cls is None:
        raise ValueError(f"exchange.extra_venues: {venue!r} is not a ccxt.pro exchange id")
    return cls({"enableRateLimit": True})


def _levels(raw: Any, depth: int) -> tuple[Level, ...]:
    out: list[Level] = []
    for lvl in raw[:depth]:
        try:
            p, q = Decimal(str(lvl[0])), Decimal(str(lvl[1]))
        except (InvalidOperation, IndexError, TypeError):
            continue
        if p.is_finite() and q.is_finite() and p > 0 and q > 0:
            out.append((p, q))
    return tuple(out)


class CcxtProFeed:
    """Order book and trades of ``symbols`` (unified, ``ETH/USDT``) on one ccxt.pro venue."""

    def __init__(
        self,
        venue: str,
        symbols: list[str],
        cfg: FeedConfig,
        queue: asyncio.Queue[Item],
        *,
        exchange: Any = None,
        depth: int = 100,
        rng: random.Random | None = None,
    ) -> None:
        self.venue = venue
        self.symbols = symbols
        self.cfg = cfg
        self.queue = queue
        self.exchange = exchange if exchange is not None else make_exchange(venue)
        self.depth = depth
        self.rng = rng or random.Random(cfg.seed)
        self.streams: dict[str, StreamStatus] = {}
        for s in symbols:
            for kind in ("book", "trades"):
                name = f"{venue}:{s}@{kind}"
                self.streams[name] = StreamStatus(name)
        self.counters = FeedCounters()
        self.errors: dict[str, int] = {}  # by ccxt exception class
        self.status = "not started"
        self.connected = False
        self.stopped_streams: dict[str, str] = {}  # stream → why it stopped for good
        self._seen_trade: dict[str, str | None] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.done = False

    def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()

    async def run(self) -> None:
        self.status = f"{self.venue}: connecting"
        self._tasks = [asyncio.create_task(self._loop(s, k), name=f"{self.venue}:{s}@{k}")
                       for s in self.symbols for k in ("book", "trades")]
        self._tasks.append(asyncio.create_task(self._watchdog(), name=f"{self.venue}:watchdog"))
        try:
            await asyncio.gather(*self._tasks[:-1], return_exceptions=True)
        finally:
            for t in self._tasks:
                t.cancel()
            self.connected = False
            self.done = True
            with contextlib.suppress(Exception):
                await self.exchange.close()

    async def _loop(self, symbol: str, kind: str) -> None:
        name = f"{self.venue}:{symbol}@{kind}"
        st = self.streams[name]
        sym = stream_symbol(symbol)
        backoff = Backoff(self.cfg.backoff_base_s, self.cfg.backoff_max_s, self.rng)
        while not self._stop.is_set():
            try:
                if kind == "book":
                    ob = await self.exchange.watch_order_book(symbol, self.cfg.snapshot_limit)
                    item: Item = (Kind.VENUE_BOOK, time.time_ns(), self.venue, sym,
                                  _levels(ob["bids"], self.depth), _levels(ob["asks"], self.depth))
                else:
                    trades = await self.exchange.watch_trades(symbol)
                    new = self._new_trades(name, trades)
                    if not new:
                        continue
                    item = (Kind.VENUE_TRADES, time.time_ns(), self.venue, sym, len(new), new[-1].get("price"))
            except asyncio.CancelledError:
                raise
            except FATAL as exc:
                why = cause_of(exc)
                self.stopped_streams[name] = why
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                st.state = BookState.STALE
                self.status = f"{self.venue} {symbol} {kind}: {why} — stream stopped (retrying cannot fix this)"
                log.warning("%s", self.status)
                await self._state(sym, kind, BookState.STALE, why)
                return
            except Exception as exc:  # ccxt NetworkError, ExchangeError and the odd raw error
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
                    backoff.attempt += 1  # the venue asked us to slow down: skip a rung
                delay = backoff.next()
                was_live = st.state is BookState.LIVE
                st.state = BookState.STALE if st.last_mono is not None else BookState.SYNCING
                self.status = f"{self.venue} {symbol} {kind}: {cause_of(exc)}; retrying in {secs(delay)}"
                log.warning("%s", self.status)
                if was_live:
                    self.counters.disconnects[type(exc).__name__] = self.counters.disconnects.get(type(exc).__name__, 0) + 1
                await self._state(sym, kind, st.state, cause_of(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            if st.last_mono is not None and st.state is not BookState.LIVE:
                self.counters.reconnects += 1
            st.last_mono = time.monotonic()
            st.messages += 1
            st.state = BookState.LIVE
            self.counters.frames += 1
            self.connected = True
            backoff.reset()
            self.status = f"{self.venue}: live"
            await put(self.queue, item, self.counters)

    def _new_trades(self, name: str, trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """ccxt returns its cached recent trades: keep those after the last one we saw."""
        last = self._seen_trade.get(name)
        ids = [str(t.get("id")) for t in trades]
        start = ids.index(last) + 1 if last in ids else 0
        if trades:
            self._seen_trade[name] = ids[-1]
        return trades[start:]

    async def _state(self, sym: str, kind: str, state: BookState, reason: str) -> None:
        if kind == "book":
            await put(self.queue, (Kind.VENUE_STATE, time.time_ns(), self.venue, sym, state, reason), self.counters)

    async def _watchdog(self) -> None:
        every = self.cfg.check_interval_s
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for name, st in self.streams.items():
                if st.state is BookState.LIVE and st.last_mono is not None and now - st.last_mono > self.cfg.stale_after_s:
                    st.state = BookState.STALE
                    self.counters.stale_detections.append(now - st.last_mono)
                    if name.endswith("@book"):
                        sym = stream_symbol(name.split(":", 1)[1].rsplit("@", 1)[0])
                        await self._state(sym, "book", BookState.STALE, f"no update for {now - st.last_mono:.1f} s")

    def stream_views(self) -> dict[str, dict[str, object]]:
        now = time.monotonic()
        return {n: st.view(now) for n, st in self.streams.items()}

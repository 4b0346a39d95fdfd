"""The live driver: exchange feeds → one bounded queue → the engine (plus the recorder).

Like :class:`engine.runs.replay.Replay` it is an object with ``async run()`` and ``stop()``
that the desk and the headless runner drive. It wires:

- the Binance combined stream (:mod:`engine.market.feeds.binance`) for the primary and
  reference symbols, frames applied to ``engine.on_market`` in arrival order;
- REST depth snapshots for the local-book procedure: a book asks (``request_snapshot``)
  and the snapshot is fetched once the stream has delivered a diff for that symbol on
  the current connection (Binance: open the stream first, buffer, then snapshot);
- after every reconnect, every book is resynced (SYNCING until a new snapshot joins
  the diff chain); while the feed is down or a depth stream is silent, books are STALE.
  The engine denies every order on a book that is not LIVE;
- ``exchangeInfo`` filters into ``engine.symbols[sym].filters`` and REST klines into the
  bars and indicators, so models and charts start with history; a timeframe still short
  of a model window is listed in ``engine.feed_info["warming_up"]``;
- extra venues (ccxt.pro) into ``driver.cob[sym]``, the consolidated book.

Everything the desk shows about the feed is in ``engine.feed_info``: ``streams`` (state
and age of the last message per stream), ``reconnects``, ``resyncs``, ``status`` (one
human line), ``warming_up`` and more.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from engine.core.engine import Engine
from engine.core.events import BookDelta, BookSnapshot, BookState, BookStateChanged, OrderFilled
from engine.core.settings import Settings
from engine.market.book import SyncedBook
from engine.market.consolidated import ConsolidatedBook
from engine.market.feeds.base import OFFLINE_HINT, Backoff, FeedConfig, Item, Kind, put
from engine.market.feeds.binance import BinanceFeed
from engine.market.feeds.rest import KLINE_INTERVALS, RestClient, RestError
from engine.market.parse import Parser, stream_symbol
from engine.market.recorder import Recorder
from models.common.schema import TIMEFRAMES, WINDOW

log = logging.getLogger(__name__)

#: Items the feeds may queue ahead of the engine (about 10 s of a busy two-symbol feed).
QUEUE_SIZE = 20_000
#: How often feed_info, staleness marks and the recorder flush are refreshed.
TICK_S = 0.25


class LiveFeedDriver:
    """Live public market data into ``engine`` (no API key). ``await run()``; ``stop()``."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        recorder: Recorder | None = None,
        max_seconds: float | None = None,
        until_closed: bool = False,
        venue_exchanges: dict[str, Any] | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.cfg = FeedConfig.from_settings(settings)
        self.recorder = recorder
        self.max_seconds = max_seconds
        self.until_closed = until_closed
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_size)
        self.parser = Parser()
        self.rng = random.Random(self.cfg.seed)
        unified = [settings.symbols.primary]
        if settings.symbols.reference and settings.symbols.reference != settings.symbols.primary:
            unified.append(settings.symbols.reference)
        self.unified = unified
        self.symbols = [stream_symbol(s) for s in unified]
        for sym in self.symbols:
            engine.add_symbol(sym, self._request_snapshot)
        self.feed = BinanceFeed(self.symbols, self.cfg, self.queue,
                                max_failed_connects=1 if until_closed else None, rng=self.rng)
        self.rest = RestClient(self.cfg.rest_url, timeout_s=self.cfg.timeout_s, backoff_base_s=self.cfg.backoff_base_s,
                               backoff_max_s=self.cfg.backoff_max_s, rng=self.rng, on_status=self._rest_status)
        venue_exchanges = venue_exchanges or {}
        self.venue_feeds: list[Any] = []
        venues = list(dict.fromkeys([*self.cfg.extra_venues, *venue_exchanges]))
        if venues:
            from engine.market.feeds.ccxtpro import CcxtProFeed  # imports ccxt: only when a venue needs it

            for v in venues:
                self.venue_feeds.append(CcxtProFeed(v, unified, self.cfg, self.queue,
                                                    exchange=venue_exchanges.get(v), rng=self.rng))
        # The consolidated book per symbol: Binance's synced book plus any ccxt.pro venues.
        self.cob = {sym: ConsolidatedBook(sym) for sym in self.symbols}
        for sym in self.symbols:
            self.cob[sym].attach(self.feed.venue, engine.symbols[sym].book)
        # snapshot bookkeeping (see _request_snapshot)
        self._wanted: set[str] = set()
        self._depth_seen: set[str] = set()
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._snap_backoff = {sym: Backoff(self.cfg.backoff_base_s, self.cfg.backoff_max_s, self.rng)
                              for sym in self.symbols}
        self._snap_retry_due: dict[str, float] = {}
        # bookkeeping for the figures and the summary
        self._last_ts = 0
        self.backfilled: dict[str, dict[str, int]] = {sym: {} for sym in self.symbols}
        self.backfill_errors: dict[str, str] = {}
        self.filters_source = "defaults"
        self.first_live_s: dict[str, float] = {}
        self.fills_on_non_live = 0
        self.consumer_errors = 0
        self.venue_trades: dict[str, int] = {}
        self._rest_note: tuple[float, str] | None = None
        self._t0 = time.monotonic()
        self._stop = asyncio.Event()
        self._backfilled = asyncio.Event()
        self._rest_unreachable = asyncio.Event()
        self.stopped_because = ""
        self._closing = False
        self.done = False
        engine.bus.on(BookStateChanged, self._on_book_state)
        engine.bus.on(OrderFilled, self._on_fill)
        engine.feed_info.update(status="starting", streams={}, reconnects=0, resyncs=0,
                                warming_up=list(TIMEFRAMES), books={})

    # ------------------------------------------------------------------ lifecycle

    def stop(self, why: str = "stopped") -> None:
        if not self.stopped_because:
            self.stopped_because = why
        self._stop.set()

    async def run(self) -> None:
        tasks: list[asyncio.Task[Any]] = []
        consumer = asyncio.create_task(self._consume(), name="live:consume")
        feed_task = asyncio.create_task(self._run_feed(), name="live:binance")
        venue_tasks = [asyncio.create_task(f.run(), name=f"live:{f.venue}") for f in self.venue_feeds]
        tasks.append(asyncio.create_task(self._meta(), name="live:meta"))
        tasks.append(asyncio.create_task(self._tick(), name="live:tick"))
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([feed_task, stop_wait], timeout=self.max_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                self.stopped_because = self.stopped_because or f"--max-seconds {self.max_seconds:g} reached"
            elif feed_task in done:
                self.stopped_because = self.stopped_because or f"exchange gone: {self.feed.status}"
        except asyncio.CancelledError:
            self.stopped_because = self.stopped_because or "interrupted"
            raise
        finally:
            self._closing = True
            stop_wait.cancel()
            self.feed.stop()
            for f in self.venue_feeds:
                f.stop()
            await _settle([feed_task, *venue_tasks], 3.0)
            for t in [*tasks, *self._fetching.values()]:
                t.cancel()
            await _settle([*tasks, *self._fetching.values()], 1.0)
            consumer.cancel()
            await _settle([consumer], 1.0)
            while not self.queue.empty():  # everything received is applied and recorded
                self._apply_safe(self.queue.get_nowait())
            self.engine.run_commands()
            await self.rest.close()
            if self.recorder is not None:
                self.recorder.close()
            self._refresh_info()
            self.engine.feed_info["status"] = f"stopped: {self.stopped_because}"
            self.done = True

    async def _run_feed(self) -> None:
        # The stream opens once the back-fill is in (or after timeout_s without it), so
        # history always lands before the first live bar closes; without a network this
        # costs one timeout at most, and late history is still used where it fits.
        self.engine.feed_info["status"] = f"back-filling bars from {self.cfg.rest_url} …"
        waits = [asyncio.create_task(self._backfilled.wait()), asyncio.create_task(self._rest_unreachable.wait())]
        done, _ = await asyncio.wait(waits, timeout=self.cfg.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for t in waits:
            t.cancel()
        if not self._backfilled.is_set():  # REST is slow or failing: don't keep the stream waiting on it
            log.warning("back-fill not done (%s): opening the stream anyway",
                        "REST unreachable" if done else f"{self.cfg.timeout_s:g} s")
        await self.feed.run()

    # ------------------------------------------------------------------ consumer

    async def _consume(self) -> None:
        queue = self.queue
        while True:
            item = await queue.get()
            self._apply_safe(item)

    def _apply_safe(self, item: Item) -> None:
        try:
            self._apply(item)
        except Exception:  # one bad item must not stop the desk; it is logged and counted
            self.consumer_errors += 1
            log.exception("live feed: failed to apply %s", Kind(item[0]).name)

    def _stamp(self, ts: int) -> int:
        # Receive stamps in applied order never go back, so a recording stays sorted
        # (a REST answer can be stamped a hair before frames queued ahead of it).
        if ts < self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        return ts

    def _apply(self, item: Item) -> None:
        kind = item[0]
        engine = self.engine
        if kind == Kind.FRAME:
            ts = self._stamp(item[1])
            payload = item[2]
            if self.recorder is not None:
                self.recorder.write(ts, payload)
            ev = self.parser.parse_frame(payload, ts)
            if ev is None:
                return
            if type(ev) is BookDelta:
                self._depth_seen.add(ev.symbol)
                engine.on_market(ev)
                if ev.symbol in self._wanted:
                    self._start_fetch(ev.symbol)
            else:
                engine.on_market(ev)
        elif kind == Kind.SNAPSHOT:
            _, ts, sym, body = item
            ts = self._stamp(ts)
            if self.recorder is not None:
                self.recorder.write_snapshot(ts, sym, body)
            ev = self.parser.parse_frame(body, ts, sym)
            book = engine.symbols[sym].book
            if isinstance(ev, BookSnapshot):
                engine.on_market(ev)
            else:  # counted by the parser; the book still waits, so fetch another one
                log.warning("depth snapshot %s: unusable body; fetching another", sym)
                self._snap_retry_due[sym] = time.monotonic() + self._snap_backoff[sym].next()
                self._wanted.add(sym)
                self._start_fetch(sym)
                return
            if book.state is BookState.LIVE:
                self._snap_backoff[sym].reset()
                self._snap_retry_due.pop(sym, None)
            else:  # not joinable (stale snapshot): the next one waits a little longer
                self._snap_retry_due[sym] = time.monotonic() + self._snap_backoff[sym].next()
        elif kind == Kind.BINARY:
            self.parser.stats.messages += 1
            self.parser.stats.rejected["binary_frame"] += 1
        elif kind == Kind.CONNECTED:
            self._depth_seen.clear()
            if item[3] > 1:
                for sym in self.symbols:
                    engine.symbols[sym].book.resync("reconnected: resubscribed, new snapshot")
        elif kind == Kind.DISCONNECTED:
            for sym in self.symbols:
                engine.symbols[sym].book.mark_stale(f"feed down: {item[3]}")
        elif kind == Kind.SEED:
            self._seed(item[2], item[3], item[4])
        elif kind == Kind.VENUE_BOOK:
            _, _, venue, sym, bids, asks = item
            if sym in self.cob:
                self.cob[sym].update(venue, bids, asks)
        elif kind == Kind.VENUE_STATE:
            _, _, venue, sym, state, reason = item
            if sym in self.cob:
                self.cob[sym].set_state(venue, state, reason)
        elif kind == Kind.VENUE_TRADES:
            key = f"{item[2]}:{item[3]}"
            self.venue_trades[key] = self.venue_trades.get(key, 0) + item[4]

    # ------------------------------------------------------------------ snapshots

    def _request_snapshot(self, symbol: str) -> None:
        """Called by a book (synchronously) when it needs a REST snapshot."""
        self._wanted.add(symbol)
        if symbol in self._depth_seen:
            self._start_fetch(symbol)

    def _start_fetch(self, symbol: str) -> None:
        if self._closing:
            return  # shutting down: the last frames are applied, no new requests go out
        if symbol in self._fetching:
            return  # one in flight; if it cannot be joined the book asks again
        self._wanted.discard(symbol)
        delay = max(0.0, self._snap_retry_due.get(symbol, 0.0) - time.monotonic())
        self._fetching[symbol] = asyncio.create_task(self._fetch_snapshot(symbol, delay), name=f"snapshot:{symbol}")

    async def _fetch_snapshot(self, symbol: str, delay: float) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            body = await self.rest.depth(symbol, self.cfg.snapshot_limit)
            await put(self.queue, (Kind.SNAPSHOT, time.time_ns(), symbol, body), self.feed.counters)
        except RestError as exc:  # a 4xx other than 429: retrying the same request cannot help
            self._rest_status(f"depth snapshot {symbol} refused: {exc}")
        finally:
            self._fetching.pop(symbol, None)

    # ------------------------------------------------------------------ filters and back-fill

    async def _meta(self) -> None:
        try:
            await self._fetch_meta()
        finally:
            self._backfilled.set()

    async def _fetch_meta(self) -> None:
        rest = self.rest
        try:
            filters = await rest.exchange_info(self.symbols)
            for sym, f in filters.items():
                if sym in self.engine.symbols:
                    self.engine.symbols[sym].filters = f
            missing = [s for s in self.symbols if s not in filters]
            self.filters_source = "exchangeInfo" if not missing else f"exchangeInfo (defaults for {', '.join(missing)})"
        except (RestError, ValueError, TypeError) as exc:
            self.filters_source = f"defaults ({exc})"
            log.warning("exchange filters unavailable, using defaults: %s", exc)
        if not self.cfg.backfill:
            return
        jobs = [(sym, tf) for sym in self.symbols for tf in KLINE_INTERVALS]
        results = await asyncio.gather(*(rest.klines(sym, tf, self.cfg.backfill_bars) for sym, tf in jobs),
                                       return_exceptions=True)
        for (sym, tf), res in zip(jobs, results, strict=True):
            if isinstance(res, BaseException):
                if isinstance(res, asyncio.CancelledError):
                    raise res
                self.backfill_errors[f"{sym} {tf}"] = str(res)
                continue
            await put(self.queue, (Kind.SEED, time.time_ns(), sym, tf, res), self.feed.counters)
        if self.backfill_errors:
            first = next(iter(self.backfill_errors.items()))
            log.warning("back-fill failed for %d of %d timeframes (first: %s: %s); they warm up from live data",
                        len(self.backfill_errors), len(jobs), *first)

    def _seed(self, sym: str, tf: str, bars: list[Any]) -> None:
        st = self.engine.symbols[sym]
        if st.bars.counts[tf] > 0:
            # Live bars of this timeframe have closed already: history cannot go in front
            # of them in order, so the timeframe warms up from live data instead.
            self.backfill_errors[f"{sym} {tf}"] = "arrived after the first live bar"
            return
        cur = st.bars.current[tf]
        if cur is not None:
            bars = [b for b in bars if b.open_time < cur.open_time]
        st.bars.seed(bars)
        for b in bars:
            st.features[tf].update(b)  # indicators warm up on history, oldest first
        self.backfilled[sym][tf] = len(bars)

    # ------------------------------------------------------------------ status

    def _rest_status(self, text: str, unreachable: bool = False) -> None:
        self._rest_note = (time.monotonic(), text)
        if unreachable:  # no point holding the stream for a back-fill that cannot come soon
            self._rest_unreachable.set()

    def _on_book_state(self, ev: BookStateChanged) -> None:
        if ev.state is BookState.LIVE and ev.symbol not in self.first_live_s:
            self.first_live_s[ev.symbol] = round(time.monotonic() - self._t0, 3)

    def _on_fill(self, ev: OrderFilled) -> None:
        st = self.engine.symbols.get(ev.symbol)
        if st is not None and st.book.state is not BookState.LIVE:
            self.fills_on_non_live += 1  # must stay 0: the risk gate refuses non-LIVE books

    async def _tick(self) -> None:
        while True:
            self._refresh_info()
            if self.recorder is not None:
                self.recorder.flush()
            await asyncio.sleep(TICK_S)

    def _mark_stale_books(self) -> None:
        for sym in self.symbols:
            st = self.feed.streams.get(f"{sym.lower()}@depth@100ms")
            if st is not None and st.state is BookState.STALE:
                age = st.age_s()
                self.engine.symbols[sym].book.mark_stale(f"no depth update for {age:.1f} s" if age else "no depth data")
        for cob in self.cob.values():
            cob.mark_stale_older_than(self.cfg.stale_after_s)

    def warming_up(self) -> list[str]:
        """Timeframes with fewer bars than a model window on any symbol."""
        return [tf for tf in TIMEFRAMES
                if any(st.features[tf].count < WINDOW for sym, st in self.engine.symbols.items() if sym in self.symbols)]

    def _refresh_info(self) -> None:
        self._mark_stale_books()
        engine, feed = self.engine, self.feed
        books: list[SyncedBook] = [engine.symbols[s].book for s in self.symbols]
        streams = feed.stream_views()
        for vf in self.venue_feeds:
            streams.update(vf.stream_views())
        resyncs = sum(b.counters.resyncs for b in books)
        if feed.connected:
            not_live = [b.symbol for b in books if b.state is not BookState.LIVE]
            status = f"live on {self.cfg.ws_url}: reconnects {feed.counters.reconnects}, resyncs {resyncs}"
            if not_live:
                status += f"; books syncing: {', '.join(not_live)}"
        else:
            status = feed.status
        if self._rest_note and self._rest_note[0] > self.rest.last_ok and time.monotonic() - self._rest_note[0] < 30:
            status += f"; REST: {self._rest_note[1]}"
        info = engine.feed_info
        # The header reads the top-level keys; everything else sits under "detail".
        info.update(
            status=status,
            streams=streams,
            reconnects=feed.counters.reconnects,
            resyncs=resyncs,
            warming_up=self.warming_up(),
            books={b.symbol: b.state.value for b in books},
            detail={
                "venue": feed.venue,
                "ws_url": self.cfg.ws_url,
                "rest_url": self.cfg.rest_url,
                "connected": feed.connected,
                "gaps": sum(b.counters.gaps for b in books),
                "backfilled": {s: dict(v) for s, v in self.backfilled.items()},
                "filters": self.filters_source,
                "queue": self.queue.qsize(),
                "parser_rejected": self.parser.stats.rejected_total,
                "rest": dict(self.rest.counters),
                "venues": {sym: cob.venue_states() for sym, cob in self.cob.items()},
                "offline_hint": "" if feed.connected else OFFLINE_HINT,
                "recording": self.recorder.info() if self.recorder is not None else None,
            },
        )

    def summary_extra(self) -> dict[str, Any]:
        """What a headless run adds to the engine's summary."""
        self._refresh_info()
        fc = self.feed.counters
        out: dict[str, Any] = {
            "feed": {
                "venue": self.feed.venue,
                "ws_url": self.cfg.ws_url,
                **fc.as_dict(),
                "resyncs": self.engine.feed_info.get("resyncs", 0),
                "backoff_delays_s": [round(d, 3) for d in self.feed.delays[-50:]],
                "books_reached_live": {s: s in self.first_live_s for s in self.symbols},
                "first_live_s": dict(self.first_live_s),
                "fills_on_non_live_book": self.fills_on_non_live,
                "consumer_errors": self.consumer_errors,
                "warming_up": self.warming_up(),
                "backfilled": {s: dict(v) for s, v in self.backfilled.items()},
                "backfill_errors": dict(self.backfill_errors),
                "filters": self.filters_source,
                "rest": dict(self.rest.counters),
                "venues": {f.venue: {"streams": f.stream_views(), "errors": dict(f.errors),
                                     "stopped": dict(f.stopped_streams)} for f in self.venue_feeds},
                "venue_trades": dict(self.venue_trades),
                "stopped_because": self.stopped_because,
            },
            "parser": self.parser.stats.as_dict(),
        }
        if self.recorder is not None:
            out["recording"] = self.recorder.info()
        return out


async def _settle(tasks: list[asyncio.Task[Any]], within_s: float) -> None:
    """Wait for tasks to finish, cancel the stragglers, and swallow their outcomes."""
    tasks = [t for t in tasks if t is not None]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=within_s)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=1.0)
    for t in tasks:
        if t.done() and not t.cancelled():
            exc = t.exception()
            if exc is not None:
                log.warning("live task %s ended with %s", t.get_name(), exc)


def live_status_line(engine: Engine) -> str:
    """The headless one-liner: prices and book states, then the feed's own line."""
    from engine.runs.headless import status_line

    info = engine.feed_info
    streams = info.get("streams")
    ages = [float(v["age_s"]) for v in streams.values() if isinstance(v, dict) and v.get("age_s") is not None] \
        if isinstance(streams, dict) else []
    oldest = f" oldest stream {max(ages):.1f} s" if ages else ""
    return f"{status_line(engine)} | feed: {info.get('status', '')}{';' if oldest else ''}{oldest}"


async def live_status_loop(engine: Engine, every_s: float = 5.0) -> None:
    import sys

    while True:
        await asyncio.sleep(every_s)
        print(live_status_line(engine), file=sys.stderr, flush=True)

"""ccxt.pro venues behind the feed interface, and the consolidated book (COB) merge."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import ccxt
import ccxt.pro
import pytest

from engine.core.events import BookDelta, BookSnapshot, BookState
from engine.execution.ledger import Ledger
from engine.kernel import live_session
from engine.market.book import SyncedBook
from engine.market.consolidated import ConsolidatedBook
from engine.market.feeds.base import FeedConfig, Kind
from engine.market.feeds.ccxtpro import CcxtProFeed
from engine.testing.fake_exchange import Scenario
from tests.support.livekit import live_settings, report, run_live

pytestmark = pytest.mark.timeout(120)

D = Decimal


def ccxt_binance_at(fx):
    """ccxt.pro's own binance class, pointed at the fake exchange (public data, no key)."""
    ex = ccxt.pro.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
    ex.has["fetchCurrencies"] = False  # a private endpoint: nothing a key-less desk may call
    ex.urls["api"]["public"] = fx.rest_url + "/api/v3"
    ex.urls["api"]["ws"]["spot"] = fx.ws_url + "/stream/ws"  # ccxt tells spot by "/stream" in the URL
    return ex


async def test_ccxt_pro_venue_streams_and_the_cob_merges_both_books(data_files, tmp_path):
    samples = []

    async def watch(engine, driver):
        cob = driver.cob["ETHUSDT"]
        while True:
            await asyncio.sleep(0.02)
            if cob.venue_states() != {"binance": "LIVE", "binance-ccxt": "LIVE"}:
                continue
            merged = cob.merged(10)
            mine = {v: cob.venue_levels(v, 10) for v in ("binance", "binance-ccxt")}
            for side, levels in ((0, merged.bids), (1, merged.asks)):
                for lvl in levels:
                    want = {v: q for v, lv in mine.items() for p, q in lv[side] if p == lvl.price}
                    assert dict(lvl.by_venue) == want, lvl
                    assert lvl.qty == sum(want.values()), lvl
            best = max(mine["binance"][0][0][0], mine["binance-ccxt"][0][0][0])
            assert merged.best_bid == best
            assert merged.venues == ("binance", "binance-ccxt")
            samples.append(merged)

    run = await run_live(data_files, Scenario(window_s=20, speed=8), tmp_path,
                         setup=lambda fx: {"binance-ccxt": ccxt_binance_at(fx)}, watch=watch)
    s = run.summary()
    venue = s["feed"]["venues"]["binance-ccxt"]
    assert venue["errors"].get("BadSymbol") is None
    assert venue["stopped"] == {}
    for sym in ("ETH/USDT", "BTC/USDT"):
        assert venue["streams"][f"binance-ccxt:{sym}@book"]["messages"] > 10
    assert s["feed"]["venue_trades"]["binance-ccxt:ETHUSDT"] > 10
    assert len(samples) >= 10
    # Both venues replay the same tape, so at some instants they quote the same top size:
    # the merged level then holds exactly twice it.
    assert any(m.bids[0].qty == 2 * dict(m.bids[0].by_venue)["binance"] for m in samples)
    assert run.book_matches_exchange("ETHUSDT")
    report("feed: ccxt.pro venue (binance class on the fake exchange) + COB merge", cob_samples_checked=len(samples),
           venue_book_updates=venue["streams"]["binance-ccxt:ETH/USDT@book"]["messages"])


class ScriptedExchange:
    """A stand-in for a ccxt.pro exchange that raises ccxt's real exception classes."""

    def __init__(self, books: list, trades: list) -> None:
        self.books, self.trades = books, trades
        self.book_calls: list[float] = []
        self.closed = False

    async def _next(self, script: list, calls: list[float] | None = None):
        if calls is not None:
            calls.append(time.monotonic())
        if not script:
            await asyncio.sleep(3600)
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    async def watch_order_book(self, symbol, limit=None):
        return await self._next(self.books, self.book_calls)

    async def watch_trades(self, symbol):
        return await self._next(self.trades)

    async def close(self):
        self.closed = True


def _book(bid: str, ask: str) -> dict:
    return {"bids": [[float(bid), 1.5], [float(bid) - 0.01, 2.0]], "asks": [[float(ask), 0.5]], "nonce": 1}


async def test_ccxt_errors_back_off_and_a_bad_symbol_stops_only_its_stream():
    ex = ScriptedExchange(
        books=[ccxt.NetworkError("socket closed"), _book("100.5", "100.6"), ccxt.RequestTimeout("timed out"),
               ccxt.RateLimitExceeded("429 slow down"), _book("100.4", "100.7"),
               ccxt.ExchangeNotAvailable("maintenance"), _book("100.3", "100.8")],
        trades=[[{"id": "1", "price": 100.5}], [{"id": "1", "price": 100.5}, {"id": "2", "price": 101.0}],
                ccxt.BadSymbol("okx does not have market symbol ETH/USDT")],
    )
    cfg = FeedConfig(backoff_base_s=0.02, backoff_max_s=0.2, stale_after_s=30)
    queue: asyncio.Queue = asyncio.Queue()
    feed = CcxtProFeed("okx", ["ETH/USDT"], cfg, queue, exchange=ex)
    task = asyncio.create_task(feed.run())
    # Wait for what is checked below (every scripted book delivered, the trade stream
    # stopped), not for a delay that a loaded box may need more of.
    items: list = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        items.extend(queue.get_nowait() for _ in range(queue.qsize()))
        if (not ex.books and "okx:ETH/USDT@trades" in feed.stopped_streams
                and sum(1 for i in items if i[0] == Kind.VENUE_BOOK) >= 3):
            break
        await asyncio.sleep(0.01)
    feed.stop()
    await asyncio.wait_for(task, 60)
    items.extend(queue.get_nowait() for _ in range(queue.qsize()))
    books = [i for i in items if i[0] == Kind.VENUE_BOOK]
    assert [(b[4][0], b[5][0]) for b in books] == [((D("100.5"), D("1.5")), (D("100.6"), D("0.5"))),
                                                   ((D("100.4"), D("1.5")), (D("100.7"), D("0.5"))),
                                                   ((D("100.3"), D("1.5")), (D("100.8"), D("0.5")))]
    assert feed.errors == {"NetworkError": 1, "RequestTimeout": 1, "RateLimitExceeded": 1,
                           "ExchangeNotAvailable": 1, "BadSymbol": 1}
    states = [i[4] for i in items if i[0] == Kind.VENUE_STATE]
    assert states.count(BookState.STALE) >= 3  # each error after data marks the venue book STALE
    trades = [i for i in items if i[0] == Kind.VENUE_TRADES]
    assert [(t[4], t[5]) for t in trades] == [(1, 100.5), (1, 101.0)]  # trade "1" counted once
    assert "BadSymbol" in feed.stopped_streams["okx:ETH/USDT@trades"]
    assert "okx:ETH/USDT@book" not in feed.stopped_streams  # the book stream lived on
    gaps = [b - a for a, b in zip(ex.book_calls, ex.book_calls[1:], strict=False)]
    assert min(gaps[i] for i in (0, 2, 3, 5)) >= 0.01  # a backoff wait after every error
    assert gaps[3] >= 0.04  # the rate limit skipped a rung of the ladder
    assert ex.closed


def test_cob_merges_only_live_venues():
    book = SyncedBook("ETHUSDT")
    book.on_delta(BookDelta("ETHUSDT", 11, 11, ((D("100.0"), D("1")),), (), 1, 1))
    book.on_snapshot(BookSnapshot("ETHUSDT", 10, ((D("100.0"), D("2")), (D("99.9"), D("3"))),
                                  ((D("100.1"), D("4")), (D("100.2"), D("5"))), 1))
    assert book.state is BookState.LIVE
    cob = ConsolidatedBook("ETHUSDT")
    cob.attach("binance", book)
    cob.update("okx", ((D("100.05"), D("7")), (D("100.0"), D("0.5"))), ((D("100.1"), D("1")), (D("100.3"), D("2"))))
    m = cob.merged(3)
    assert [(lv.price, lv.qty, lv.by_venue) for lv in m.bids] == [
        (D("100.05"), D("7"), (("okx", D("7")),)),
        (D("100.0"), D("1.5"), (("binance", D("1")), ("okx", D("0.5")))),
        (D("99.9"), D("3"), (("binance", D("3")),)),
    ]
    assert [(lv.price, lv.qty) for lv in m.asks] == [(D("100.1"), D("5")), (D("100.2"), D("5")), (D("100.3"), D("2"))]
    assert m.venues == ("binance", "okx")
    assert not m.crossed
    cob.update("okx", ((D("100.15"), D("1")),), ((D("100.3"), D("1")),))
    assert cob.merged(3).crossed  # okx bids above binance's ask: shown, not hidden
    cob.set_state("okx", BookState.STALE, "no update")
    m = cob.merged(3)
    assert m.venues == ("binance",)
    assert m.left_out == (("okx", "STALE"),)
    assert [lv.price for lv in m.bids] == [D("100.0"), D("99.9")]
    book.mark_stale("feed down")
    assert cob.merged(3).bids == ()
    assert cob.merged(3).left_out == (("binance", "STALE"), ("okx", "STALE"))


async def test_extra_venue_from_settings_builds_a_ccxt_pro_client(tmp_path):
    cfg = live_settings(tmp_path, None, 'exchange.extra_venues=["okx"]')
    driver = live_session(cfg, models=False, ledger=Ledger.memory()).live
    assert [f.venue for f in driver.venue_feeds] == ["okx"]
    assert isinstance(driver.venue_feeds[0].exchange, ccxt.pro.okx)
    assert set(driver.cob) == {"ETHUSDT", "BTCUSDT"}
    await driver.venue_feeds[0].exchange.close()
    bad = live_settings(tmp_path, None, 'exchange.extra_venues=["nosuchvenue"]')
    with pytest.raises(ValueError, match="nosuchvenue"):
        live_session(bad, models=False, ledger=Ledger.memory())

"""The fake exchange speaks Binance's wire format from the real recordings, and stops by itself."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import defaultdict
from decimal import Decimal

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

from engine.core.events import BookDelta, BookSnapshot, BookState
from engine.market.book import SyncedBook
from engine.market.capture import merged_lines
from engine.market.feeds.rest import parse_exchange_info
from engine.market.parse import Parser
from engine.testing.fake_exchange import FakeExchange, Scenario

pytestmark = pytest.mark.timeout(120)


async def _drain(ws, limit=100_000):
    """Every frame until the server's clean close (which must come)."""
    frames = []
    for _ in range(limit):
        try:
            frames.append(await ws.recv())
        except ConnectionClosedOK:
            return frames
    raise AssertionError("the server never closed the stream")


async def test_combined_stream_is_the_recording_verbatim(data_files):
    async with FakeExchange(data_files, Scenario(window_s=8)) as fx:
        url = f"{fx.ws_url}/stream?streams=ethusdt@trade/ethusdt@depth@100ms"
        async with connect(url) as ws:
            frames = await _drain(ws)
            assert ws.close_code == 1000
            assert ws.close_reason == "end of recording"
        expected = [r.frame.decode() for r in fx.stream if r.stream in ("ethusdt@trade", "ethusdt@depth@100ms")]
        assert frames == expected
        assert len(frames) > 100
        # The data is over: the exchange refuses new connections.
        with pytest.raises(OSError):
            async with connect(url, open_timeout=30):
                pass


async def test_depth_snapshot_is_the_book_now_and_joins_the_stream(data_files):
    async with (FakeExchange(data_files, Scenario(window_s=8, close_at_end=False)) as fx,
                connect(f"{fx.ws_url}/stream?streams=btcusdt@depth@100ms") as ws, aiohttp.ClientSession() as http):
            diffs = [orjson.loads(await ws.recv())["data"] for _ in range(20)]
            async with http.get(f"{fx.rest_url}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": "1000"}) as r:
                assert r.status == 200
                snap = await r.json()
            last = snap["lastUpdateId"]
            assert last >= diffs[-1]["u"]  # the exchange is at least as far as what it sent
            later = []
            while not later or later[-1]["u"] <= last:
                later.append(orjson.loads(await ws.recv())["data"])
            joining = next(d for d in later if d["u"] > last)
            assert joining["U"] <= last + 1 <= joining["u"]  # Binance's join rule holds

            async def read_on():
                while True:
                    await ws.recv()

            reader = asyncio.create_task(read_on())
            await asyncio.wait_for(fx.done.wait(), 30)
            reader.cancel()
            async with http.get(f"{fx.rest_url}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": "50"}) as r:
                final = await r.json()
    # Independently: the engine's parser and synced book over the raw recording, up to the
    # last frame served, must give the same top 50 levels.
    end_ts = fx.stream[-1].ts
    parser, book = Parser(), SyncedBook("BTCUSDT")
    hints, lines = merged_lines([p for p in data_files if "btc" in p.name])
    for cl in lines:
        if cl.ts_recv > end_ts:
            break
        ev = parser.parse_frame(cl.payload, cl.ts_recv, hints[cl.source])
        if isinstance(ev, BookDelta):
            book.on_delta(ev)
        elif isinstance(ev, BookSnapshot):
            book.on_snapshot(ev)
    assert book.state is BookState.LIVE
    assert final["lastUpdateId"] == book.last_update_id
    assert [(Decimal(p), Decimal(q)) for p, q in final["bids"]] == book.book.top_bids(50)
    assert [(Decimal(p), Decimal(q)) for p, q in final["asks"]] == book.book.top_asks(50)


async def test_klines_are_aggregated_from_the_recorded_trades(data_files):
    async with FakeExchange(data_files, Scenario(history_s=200, window_s=5)) as fx, aiohttp.ClientSession() as http:
        async with http.get(f"{fx.rest_url}/api/v3/klines",
                            params={"symbol": "ETHUSDT", "interval": "1m", "limit": "1000"}) as r:
            assert r.status == 200
            klines = await r.json()
        start = fx.stream[0].ts  # no client yet: the exchange clock stands at the end of the history
    # Independent aggregation of the raw trade lines before that point (json + Decimal).
    want: dict[int, list] = {}
    for path in [p for p in data_files if "eth" in p.name]:
        with gzip.open(path, "rt") as fh:
            for line in fh:
                ts, payload = line.split(" ", 1)
                if int(ts) >= start:
                    break
                msg = json.loads(payload)
                if msg.get("stream") != "ethusdt@trade":
                    continue
                d = msg["data"]
                b = d["T"] - d["T"] % 60_000
                p, q = Decimal(d["p"]), Decimal(d["q"])
                k = want.setdefault(b, [p, p, p, p, Decimal(0), 0])
                k[1], k[2], k[3] = max(k[1], p), min(k[2], p), p
                k[4] += q
                k[5] += 1
    assert [k[0] for k in klines] == sorted(want)
    assert len(klines) >= 3
    for k in klines:
        o, h, lo, c, v, n = want[k[0]]
        assert (Decimal(k[1]), Decimal(k[2]), Decimal(k[3]), Decimal(k[4]), Decimal(k[5]), k[8]) == (o, h, lo, c, v, n)
        assert k[6] == k[0] + 59_999


async def test_exchange_info_and_raw_subscribe(data_files):
    async with FakeExchange(data_files, Scenario(window_s=5)) as fx, aiohttp.ClientSession() as http:
        async with http.get(f"{fx.rest_url}/api/v3/exchangeInfo", params={"symbols": '["ETHUSDT"]'}) as r:
            filters = parse_exchange_info(await r.read())
        assert set(filters) == {"ETHUSDT"}
        eth = filters["ETHUSDT"]
        assert (eth.tick_size, eth.step_size, eth.min_notional) == (Decimal("0.01"), Decimal("0.0001"), Decimal("5"))
        async with connect(f"{fx.ws_url}/ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 7}))
            assert json.loads(await ws.recv()) == {"result": None, "id": 7}
            msg = json.loads(await ws.recv())
            assert msg["e"] == "trade"
            assert msg["s"] == "BTCUSDT"


async def test_rate_limit_and_server_errors_on_depth(data_files):
    sc = Scenario(window_s=5, depth_429=1, retry_after_s=3, depth_5xx=1, close_at_end=False)
    async with FakeExchange(data_files, sc) as fx, aiohttp.ClientSession() as http:
        seen = []
        for _ in range(3):
            async with http.get(f"{fx.rest_url}/api/v3/depth", params={"symbol": "ETHUSDT"}) as r:
                seen.append((r.status, r.headers.get("Retry-After")))
        assert seen == [(429, "3"), (503, None), (200, None)]
        async with http.get(f"{fx.rest_url}/api/v3/depth", params={"symbol": "NOPEUSDT"}) as r:
            assert r.status == 400


async def test_stops_by_itself(data_files):
    fx = FakeExchange(data_files, Scenario(window_s=60, speed=1.0, lifetime_s=0.5))
    await fx.start()
    async with connect(f"{fx.ws_url}/stream?streams=ethusdt@trade") as ws:
        await asyncio.wait_for(fx.stopped.wait(), 60)
        await asyncio.wait_for(_drain(ws), 60)
    assert fx.pos < len(fx.stream)  # it stopped on its lifetime, well before the data ran out
    with pytest.raises(OSError):
        async with connect(f"{fx.ws_url}/stream?streams=ethusdt@trade", open_timeout=30):
            pass
    counts = defaultdict(int)
    for r in fx.stream:
        counts[r.kind] += 1
    assert counts["trade"]
    assert counts["depth"]
    assert counts["ticker"]

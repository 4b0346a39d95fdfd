"""A fake Binance spot exchange on 127.0.0.1 for tests and offline demos (aiohttp).

It serves, on one port, what the live desk talks to:

- ``/stream?streams=a/b/c``: the combined websocket stream, replaying recordings in the
  ``<recv_ns> <json>`` format (the files in ``../shared/data``) frame for frame, verbatim;
- ``/ws``, ``/ws/<n>``, ``…/ws/<n>``: the raw stream with ``SUBSCRIBE`` / ``UNSUBSCRIBE``
  requests (what ccxt.pro's binance class uses);
- ``/api/v3/depth``: a snapshot of the exchange's book *as it stands now* in the replayed
  timeline (recorded snapshot plus every diff published so far), ``lastUpdateId`` and all;
- ``/api/v3/klines``: klines aggregated from the recorded trades up to now (the last one
  is the bar in progress, as on Binance);
- ``/api/v3/exchangeInfo``, ``/api/v3/ping``, ``/api/v3/time``;
- the signed spot endpoints ccxt's ``binance`` class trades through (``/api/v3/account``,
  ``/api/v3/order`` POST/GET/DELETE, ``openOrders``, ``myTrades``): an account with the key
  pair given as ``api_key``/``api_secret``, orders filled against this book
  (:mod:`engine.testing.fake_spot_api`; ``Scenario.auth_fail`` refuses every key).

The recording plays as one exchange timeline: while no client is subscribed the timeline
holds; ``lost_on_reconnect`` frames pass unseen while a client is away. A seeded
:class:`Scenario` injects the faults of RELIABILITY.md's feed and book rows: drops, clean
closes, silence, missing pongs, diff gaps, duplicates, reordered diffs, malformed and
oversized frames, crossing diffs, HTTP 429 with ``Retry-After``, 5xx and stale snapshots. At the end of
the data it stops listening and closes every connection; it also stops by itself after
``lifetime_s``. Run it alone with ``python -m engine.testing.fake_exchange PATH... --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from engine.market.capture import merged_lines
from engine.testing.fake_spot_api import Faults, SpotAccount

log = logging.getLogger(__name__)

INTERVALS_S = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
               "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400}

#: Real Binance spot filters for the recorded symbols (exchangeInfo, 2024).
EXCHANGE_INFO: dict[str, dict[str, str]] = {
    "BTCUSDT": {"base": "BTC", "tick": "0.01000000", "step": "0.00001000", "min_qty": "0.00001000", "min_notional": "5.00000000"},
    "ETHUSDT": {"base": "ETH", "tick": "0.01000000", "step": "0.00010000", "min_qty": "0.00010000", "min_notional": "5.00000000"},
}


@dataclass
class Scenario:
    """Which faults to inject, where (seeded), and how fast to play. Counts are totals."""

    seed: int = 0
    speed: float | None = None  # multiple of recorded time; None = as fast as the client reads
    history_s: float = 0.0  # the first seconds only back klines (not streamed)
    window_s: float | None = None  # stream only this many recorded seconds
    drop_every: int = 0  # abort the TCP connection after every k frames on a connection
    max_drops: int = 0
    close_every: int = 0  # close cleanly (1001 going away, like the 24 h cut) after every k frames
    max_closes: int = 0
    silence_after: int = 0  # after k frames, a connection goes quiet (socket open, pings answered)
    no_pong_after: int = 0  # after k frames, a connection goes quiet and stops answering pings
    max_silences: int = 1
    lost_on_reconnect: int = 0  # frames of the timeline that pass while a client is away
    gaps: int = 0  # depth diffs withheld
    duplicates: int = 0  # trade frames sent twice
    reorders: int = 0  # a symbol's depth diff sent after the next one
    crossed: int = 0  # depth diffs sent with one more bid, 1 % above the best ask (ids unchanged: a valid chain)
    malformed: int = 0  # bad frames injected (bad JSON, binary, unknown stream, wrong schema, NaN, array)
    oversized: int = 0  # 2 MiB frames injected
    depth_429: int = 0  # first N depth requests: 429 with Retry-After
    retry_after_s: int = 1
    depth_5xx: int = 0  # then N depth requests: 503
    stale_snapshots: int = 0  # then N depth requests: the oldest snapshot (cannot be joined)
    klines_fail: tuple[str, ...] = ()  # intervals whose klines requests get a 500
    auth_fail: bool = False  # every signed (account/order) request: 401 {"code":-2015} (wrong keys)
    ping_interval_s: float = 0.0  # server pings like Binance (every 20 s there); 0 = none
    close_at_end: bool = True
    lifetime_s: float = 300.0


@dataclass(slots=True)
class Rec:
    ts: int
    stream: str
    symbol: str
    kind: str  # trade / depth / ticker / other
    frame: bytes  # combined-stream frame, verbatim
    raw_start: int  # frame[raw_start:-1] is the raw-stream payload
    obj: dict[str, Any] | None  # parsed data (depth and trades only)


@dataclass
class Stats:
    frames_sent: int = 0
    by_stream: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    trades_sent: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    connections: int = 0
    drops: int = 0
    closes: int = 0
    silences: int = 0
    silence_started: list[float] = field(default_factory=list)  # monotonic
    no_pongs: int = 0
    pings_ignored: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    gaps: int = 0
    duplicates: int = 0
    reorders: int = 0
    crossed: int = 0
    malformed: int = 0
    oversized: int = 0
    lost: int = 0
    rest: list[tuple[float, str, int]] = field(default_factory=list)  # (arrival, monotonic; path; status)
    depth_429: int = 0
    depth_5xx: int = 0
    stale_snapshots: int = 0

    def trades(self, symbol: str | None = None) -> int:
        if symbol is not None:
            return len(self.trades_sent.get(symbol, ()))
        return sum(len(v) for v in self.trades_sent.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames_sent": self.frames_sent, "trades_sent": {s: len(v) for s, v in self.trades_sent.items()},
            "connections": self.connections, "drops": self.drops, "closes": self.closes, "silences": self.silences,
            "no_pongs": self.no_pongs, "pings_sent": self.pings_sent, "pongs_received": self.pongs_received,
            "gaps": self.gaps, "duplicates": self.duplicates, "reorders": self.reorders, "crossed": self.crossed, "malformed": self.malformed,
            "oversized": self.oversized, "lost": self.lost, "depth_429": self.depth_429, "depth_5xx": self.depth_5xx,
            "stale_snapshots": self.stale_snapshots, "rest_requests": len(self.rest),
        }


class _Conn:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request, combined: bool, streams: set[str]) -> None:
        self.ws = ws
        self.request = request
        self.combined = combined
        self.streams = streams
        self.sent = 0
        self.quiet = False  # silenced: nothing more is sent on it
        self.no_pong = False
        self.dead = False

    @property
    def active(self) -> bool:
        return not (self.quiet or self.dead or self.ws.closed)


def _bad_frames(sym: str) -> list[tuple[bytes, bool]]:
    """(payload, binary?) for each kind of malformed frame, in a fixed cycle."""
    s = sym.lower().encode()
    return [
        (b'{"stream":"' + s + b'@trade","data":{"e":"trade","t":', False),  # cut short: bad JSON
        (b"\x00\x01\x02 binary frame", True),
        (b'{"stream":"' + s + b'@kline_1m","data":{"e":"kline"}}', False),  # unknown stream
        (b'{"stream":"' + s + b'@trade","data":{"e":"trade","t":"x","p":"1","q":"1","T":1,"m":true}}', False),
        (b'{"stream":"' + s + b'@trade","data":{"e":"trade","t":1,"p":"NaN","q":"1","T":1,"m":true}}', False),
        (b"[1,2,3]", False),  # not an object
    ]


def load_timeline(paths: list[Path], history_s: float = 0.0, window_s: float | None = None
                  ) -> tuple[dict[str, dict[str, Any]], list[Rec], list[Rec]]:
    """(recorded REST snapshot per symbol, history records, stream records)."""
    hints, lines = merged_lines(paths)
    snapshots: dict[str, dict[str, Any]] = {}
    history: list[Rec] = []
    stream: list[Rec] = []
    t0: int | None = None
    need = {h for h in hints if h}
    started = False
    for cl in lines:
        if t0 is None:
            t0 = cl.ts_recv
        payload = cl.payload
        if payload.startswith(b'{"lastUpdateId"'):
            sym = hints[cl.source]
            if sym and sym not in snapshots:
                snapshots[sym] = orjson.loads(payload)
            continue
        i = payload.find(b'"data":')
        if not payload.startswith(b'{"stream":"') or i < 0:
            continue
        name = payload[11:payload.find(b'"', 11)].decode()
        sym_l, _, what = name.partition("@")
        kind = "trade" if what == "trade" else "depth" if what.startswith("depth") else \
            "ticker" if what == "bookTicker" else "other"
        obj = orjson.loads(payload)["data"] if kind in ("trade", "depth") else None
        rec = Rec(cl.ts_recv, name, sym_l.upper(), kind, payload, i + 7, obj)
        if not started:
            started = need <= set(snapshots) and cl.ts_recv >= t0 + history_s * 1e9
        if started:
            if window_s is not None and stream and cl.ts_recv > stream[0].ts + window_s * 1e9:
                break
            stream.append(rec)
        else:
            history.append(rec)
    return snapshots, history, stream


@functools.lru_cache(maxsize=4)
def _cached_timeline(paths: tuple[str, ...], stamps: tuple[float, ...], history_s: float, window_s: float | None
                     ) -> tuple[dict[str, dict[str, Any]], list[Rec], list[Rec]]:
    # Tests start many exchanges on the same files; the records are never mutated.
    return load_timeline([Path(p) for p in paths], history_s, window_s)


class FakeExchange:
    """``async with FakeExchange(paths, Scenario(...)) as fx:`` → ``fx.ws_url``, ``fx.rest_url``."""

    def __init__(self, paths: list[Path], scenario: Scenario | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, api_key: str | None = None, api_secret: str | None = None) -> None:
        self.scenario = sc = scenario or Scenario()
        self.host = host
        self.port = port
        self.stats = Stats()
        snaps, self.history, self.stream = _cached_timeline(
            tuple(str(p) for p in paths), tuple(Path(p).stat().st_mtime for p in paths), sc.history_s, sc.window_s)
        if not self.stream:
            raise ValueError("fake exchange: nothing to stream in these recordings")
        self.symbols = sorted(snaps)
        self.first_snapshot = {s: orjson.dumps(v) for s, v in snaps.items()}
        self.books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.last_update_id: dict[str, int] = {}
        for sym, snap in snaps.items():
            self.books[sym] = (dict(snap["bids"]), dict(snap["asks"]))
            self.last_update_id[sym] = snap["lastUpdateId"]
        self.filters = {k: dict(v) for k, v in EXCHANGE_INFO.items()}  # what exchangeInfo says (tests may edit)
        self.trades: dict[str, list[tuple[int, Decimal, Decimal, bool]]] = defaultdict(list)
        #: The spot account behind the signed endpoints (tests read its orders, fills, requests).
        self.account = SpotAccount(self.books.get, self._tradable, api_key, api_secret,
                                   faults=Faults(auth=sc.auth_fail))
        for rec in self.history:
            self._apply(rec)
        self.pos = 0
        self.plan = self._plan()
        self.conns: set[_Conn] = set()
        self._subscribed = asyncio.Event()
        self._skip = 0
        self._held: dict[str, Rec] = {}
        self._depth_requests = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.done = asyncio.Event()  # the data ran out (or the lifetime did)
        self.stopped = asyncio.Event()
        self.end_mono: float | None = None

    # ------------------------------------------------------------------ plan

    def _plan(self) -> dict[int, list[str]]:
        """Seeded positions for the per-frame faults, spread out so each resync can finish."""
        sc = self.scenario
        rng = random.Random(sc.seed)
        faults = (["gap"] * sc.gaps + ["duplicate"] * sc.duplicates + ["reorder"] * sc.reorders
                  + ["malformed"] * sc.malformed + ["oversized"] * sc.oversized + ["crossed"] * sc.crossed)
        rng.shuffle(faults)
        n = len(self.stream)
        plan: dict[int, list[str]] = defaultdict(list)
        if not faults:
            return plan
        lo, hi = int(n * 0.15), int(n * 0.85)  # away from the start (syncing) and the end
        step = (hi - lo) / len(faults)
        for k, fault in enumerate(faults):
            want = {"gap": "depth", "reorder": "depth", "crossed": "depth", "duplicate": "trade"}.get(fault)
            i = int(lo + step * k + rng.uniform(0, step / 4))
            while want and i < n - 1 and self.stream[i].kind != want:
                i += 1
            plan[i].append(fault)
        return plan

    # ------------------------------------------------------------------ lifecycle

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> FakeExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        for method in ("GET", "POST", "DELETE"):
            app.router.add_route(method, "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self.port)
        await self._site.start()
        server = self._site._server
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._tasks.append(asyncio.create_task(self._publish(), name="fake:publish"))
        self._tasks.append(asyncio.create_task(self._lifetime(), name="fake:lifetime"))

    def open_connections(self) -> int:
        """HTTP and websocket connections open on the server now (clients that closed their
        sessions leave none behind)."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    def _tradable(self, symbol: str) -> dict[str, str] | None:
        if symbol not in self.books or symbol not in self.filters:
            return None
        return {"quote": "USDT", **self.filters[symbol]}

    async def stop_listening(self) -> None:
        """New connections are refused from now on; open ones stay."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.done.set()
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        await self.stop_listening()
        for c in list(self.conns):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.ws.close(code=1001, message=b"server stopping"), 1.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _lifetime(self) -> None:
        await asyncio.sleep(self.scenario.lifetime_s)
        log.warning("fake exchange: lifetime of %.0f s reached; stopping", self.scenario.lifetime_s)
        await self.stop()

    # ------------------------------------------------------------------ timeline

    def _apply(self, rec: Rec) -> None:
        """Advance the exchange's own state (book, trades) by one record."""
        obj = rec.obj
        if rec.kind == "depth" and obj is not None and rec.symbol in self.books:
            if obj["u"] <= self.last_update_id[rec.symbol]:
                return  # older than the recorded snapshot
            bids, asks = self.books[rec.symbol]
            for side, levels in ((bids, obj["b"]), (asks, obj["a"])):
                for p, q in levels:
                    if Decimal(q) == 0:
                        side.pop(p, None)
                    else:
                        side[p] = q
            self.last_update_id[rec.symbol] = obj["u"]
        elif rec.kind == "trade" and obj is not None:
            price, qty = Decimal(obj["p"]), Decimal(obj["q"])
            self.trades[rec.symbol].append((obj["T"], price, qty, obj["m"]))
            self.account.on_trade(rec.symbol, price, qty)

    async def _publish(self) -> None:
        sc = self.scenario
        recs = self.stream
        wall0 = time.perf_counter()
        rec0: int | None = None
        n = 0
        try:
            while self.pos < len(recs):
                if not any(c.active for c in self.conns):
                    self._subscribed.clear()
                    await self._subscribed.wait()
                    rec0 = None  # re-anchor the pacing after a hold
                    continue
                rec = recs[self.pos]
                self.pos += 1
                self._apply(rec)
                if self._skip > 0:  # the client is reconnecting: the market moves on without it
                    self._skip -= 1
                    self.stats.lost += 1
                    continue
                if sc.speed is not None:
                    if rec0 is None:
                        rec0, wall0 = rec.ts, time.perf_counter()
                    delay = wall0 + (rec.ts - rec0) / 1e9 / sc.speed - time.perf_counter()
                    if delay > 0.001:
                        await asyncio.sleep(delay)
                await self._emit(rec, self.plan.get(self.pos - 1, ()))
                n += 1
                if n % 16 == 0:
                    await asyncio.sleep(0)  # let a client in the same process read
            for rec in list(self._held.values()):
                await self._send_all(rec)
            self._held.clear()
            self.end_mono = time.monotonic()
            if sc.close_at_end:
                await self.stop_listening()
                for c in list(self.conns):
                    with contextlib.suppress(Exception):
                        await c.ws.close(code=1000, message=b"end of recording")
        finally:
            self.done.set()

    async def _emit(self, rec: Rec, faults: Any) -> None:
        st = self.stats
        if "gap" in faults:
            st.gaps += 1
            return
        if "reorder" in faults and rec.symbol not in self._held:
            st.reorders += 1
            self._held[rec.symbol] = rec  # sent right after the next diff of this symbol
            return
        if "crossed" in faults and rec.symbol in self.books:
            st.crossed += 1
            rec = self._crossing(rec)  # what clients see; the exchange's own book stays sound
        await self._send_all(rec)
        if rec.kind == "depth" and rec.symbol in self._held:
            await self._send_all(self._held.pop(rec.symbol))
        if "duplicate" in faults:
            st.duplicates += 1
            await self._send_all(rec, count=False)
        if "malformed" in faults:
            payload, binary = _bad_frames(rec.symbol)[st.malformed % 6]
            st.malformed += 1
            await self._send_extra(rec.stream, payload, binary)
        if "oversized" in faults:
            st.oversized += 1
            pad = b"x" * (2 << 20)
            await self._send_extra(rec.stream, b'{"stream":"' + rec.stream.encode() + b'","data":{"pad":"' + pad + b'"}}',
                                   False)

    def _crossing(self, rec: Rec) -> Rec:
        """The same diff (same ``U``/``u``) with one more bid 1 % above the exchange's best ask."""
        asks = self.books[rec.symbol][1]
        best_ask = min((Decimal(p) for p in asks), default=Decimal(1))
        obj = orjson.loads(rec.frame)
        obj["data"]["b"].append([_s(best_ask * Decimal("1.01")), "1.00000000"])
        frame = orjson.dumps(obj)
        i = frame.find(b'"data":')
        return Rec(rec.ts, rec.stream, rec.symbol, rec.kind, frame, i + 7, obj["data"])

    async def _send_all(self, rec: Rec, count: bool = True) -> None:
        sc = self.scenario
        st = self.stats
        for c in list(self.conns):
            if not c.active or rec.stream not in c.streams:
                continue
            payload = rec.frame if c.combined else rec.frame[rec.raw_start:-1]
            if not await self._send(c, payload, False):
                continue
            if count:
                st.frames_sent += 1
                st.by_stream[rec.stream] += 1
                if rec.kind == "trade" and rec.obj is not None and c.combined:
                    st.trades_sent[rec.symbol].add(rec.obj["t"])
            c.sent += 1
            if sc.drop_every and c.sent >= sc.drop_every and (not sc.max_drops or st.drops < sc.max_drops):
                st.drops += 1
                c.dead = True
                transport = c.request.transport
                if transport is not None:
                    transport.abort()  # no close frame: a dropped connection
            elif sc.close_every and c.sent >= sc.close_every and (not sc.max_closes or st.closes < sc.max_closes):
                st.closes += 1
                c.dead = True
                await c.ws.close(code=1001, message=b"going away")
            elif (sc.silence_after and c.sent >= sc.silence_after and st.silences + st.no_pongs < sc.max_silences):
                st.silences += 1
                st.silence_started.append(time.monotonic())
                c.quiet = True
            elif (sc.no_pong_after and c.sent >= sc.no_pong_after and st.silences + st.no_pongs < sc.max_silences):
                st.no_pongs += 1
                st.silence_started.append(time.monotonic())
                c.quiet = c.no_pong = True

    async def _send_extra(self, stream: str, payload: bytes, binary: bool) -> None:
        for c in list(self.conns):
            if c.active and stream in c.streams:
                await self._send(c, payload, binary)

    async def _send(self, c: _Conn, payload: bytes, binary: bool) -> bool:
        try:
            await c.ws.send_frame(payload, WSMsgType.BINARY if binary else WSMsgType.TEXT)
            return True
        except (ConnectionError, RuntimeError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            c.dead = True
            return False

    # ------------------------------------------------------------------ HTTP

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/stream":
            streams = set(filter(None, request.query.get("streams", "").split("/")))
            return await self._websocket(request, True, streams)
        if path == "/ws" or "/ws/" in path or path.endswith("/ws"):
            return await self._websocket(request, False, set())
        if self.account.handles(request.method, path):
            arrived = time.monotonic()
            resp = await self.account.handle(request)
            self.stats.rest.append((arrived, path, resp.status))
            return resp
        handler = {
            "/api/v3/depth": self._depth,
            "/api/v3/klines": self._klines,
            "/api/v3/exchangeInfo": self._exchange_info,
            "/api/v3/ping": self._ping,
            "/api/v3/time": self._time,
        }.get(path)
        arrived = time.monotonic()
        if handler is None:
            resp = self._json({"code": -1, "msg": f"unknown path {path}"}, 404, path)
        else:
            resp = await handler(request)
        self.stats.rest.append((arrived, path, resp.status))
        return resp

    def _json(self, obj: Any, status: int, path: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers)

    def _symbol(self, request: web.Request) -> str | None:
        sym = request.query.get("symbol", "").upper()
        return sym if sym in self.books else None

    async def _ping(self, request: web.Request) -> web.Response:
        return self._json({}, 200, request.path)

    async def _time(self, request: web.Request) -> web.Response:
        return self._json({"serverTime": self._now_ms()}, 200, request.path)

    def _now_ms(self) -> int:
        """Exchange time: the event time of the latest trade or diff in the timeline."""
        recs = self.stream[max(0, self.pos - 50): self.pos] if self.pos else self.history[-50:]
        for rec in reversed(recs):
            if rec.obj is not None:
                return int(rec.obj.get("T") or rec.obj.get("E") or 0)
        return int(self.stream[0].ts // 1_000_000)

    async def _depth(self, request: web.Request) -> web.Response:
        sc, st = self.scenario, self.stats
        sym = self._symbol(request)
        if sym is None:
            return self._json({"code": -1121, "msg": "Invalid symbol."}, 400, request.path)
        self._depth_requests += 1
        k = self._depth_requests
        if k <= sc.depth_429:
            st.depth_429 += 1
            return self._json({"code": -1003, "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE."},
                              429, request.path, {"Retry-After": str(sc.retry_after_s)})
        k -= sc.depth_429
        if k <= sc.depth_5xx:
            st.depth_5xx += 1
            return self._json({"code": -1001, "msg": "Internal error; unable to process your request."}, 503, request.path)
        k -= sc.depth_5xx
        if k <= sc.stale_snapshots:
            st.stale_snapshots += 1
            return web.Response(body=self.first_snapshot[sym], content_type="application/json")
        try:
            limit = max(1, min(5000, int(request.query.get("limit", "100"))))
        except ValueError:
            return self._json({"code": -1100, "msg": "Illegal characters found in parameter 'limit'."}, 400, request.path)
        bids, asks = self.books[sym]
        top_b = sorted(bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)[:limit]
        top_a = sorted(asks.items(), key=lambda kv: Decimal(kv[0]))[:limit]
        body = {"lastUpdateId": self.last_update_id[sym], "bids": [list(x) for x in top_b], "asks": [list(x) for x in top_a]}
        return self._json(body, 200, request.path)

    def book_top(self, symbol: str, n: int) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """The exchange's own top ``n`` levels a side now (tests compare the client's book to it)."""
        bids, asks = self.books[symbol]
        b = sorted(((Decimal(p), Decimal(q)) for p, q in bids.items()), reverse=True)[:n]
        a = sorted((Decimal(p), Decimal(q)) for p, q in asks.items())[:n]
        return b, a

    async def _klines(self, request: web.Request) -> web.Response:
        sym = self._symbol(request)
        interval = request.query.get("interval", "")
        if sym is None or interval not in INTERVALS_S:
            return self._json({"code": -1121, "msg": "Invalid symbol or interval."}, 400, request.path)
        if interval in self.scenario.klines_fail:
            return self._json({"code": -1001, "msg": "Internal error."}, 500, request.path)
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "500"))))
        except ValueError:
            return self._json({"code": -1100, "msg": "Illegal limit."}, 400, request.path)
        return self._json(self.klines(sym, interval, limit), 200, request.path)

    def klines(self, symbol: str, interval: str, limit: int) -> list[list[Any]]:
        """Binance klines from the trades the exchange has seen so far (empty intervals filled)."""
        width = INTERVALS_S[interval] * 1000
        buckets: dict[int, list[Any]] = {}
        for t, p, q, m in self.trades.get(symbol, []):
            b = t - t % width
            k = buckets.get(b)
            if k is None:
                buckets[b] = [p, p, p, p, q, p * q, 1, Decimal(0) if m else q, Decimal(0) if m else p * q]
                continue
            k[1] = max(k[1], p)
            k[2] = min(k[2], p)
            k[3] = p
            k[4] += q
            k[5] += p * q
            k[6] += 1
            if not m:
                k[7] += q
                k[8] += p * q
        if not buckets:
            return []
        out: list[list[Any]] = []
        first, last = min(buckets), max(buckets)
        prev_close: Decimal | None = None
        zero = Decimal(0)
        for b in range(first, last + width, width):
            k = buckets.get(b)
            if k is None:  # Binance reports an interval without trades as a flat, empty kline
                assert prev_close is not None
                k = [prev_close, prev_close, prev_close, prev_close, zero, zero, 0, zero, zero]
            prev_close = k[3]
            out.append([b, _s(k[0]), _s(k[1]), _s(k[2]), _s(k[3]), _s(k[4]), b + width - 1, _s(k[5]), k[6],
                        _s(k[7]), _s(k[8]), "0"])
        return out[-limit:]

    async def _exchange_info(self, request: web.Request) -> web.Response:
        wanted = None
        raw = request.query.get("symbols") or request.query.get("symbol")
        if raw:
            try:
                wanted = set(orjson.loads(raw)) if raw.startswith("[") else {raw}
            except orjson.JSONDecodeError:
                return self._json({"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."}, 400,
                                  request.path)
        symbols = [_symbol_info(s, self.filters[s]) for s in self.symbols
                   if s in self.filters and (wanted is None or s in wanted)]
        body = {"timezone": "UTC", "serverTime": self._now_ms(),
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}],
                "exchangeFilters": [], "symbols": symbols}
        return self._json(body, 200, request.path)

    # ------------------------------------------------------------------ websocket

    async def _websocket(self, request: web.Request, combined: bool, streams: set[str]) -> web.StreamResponse:
        sc = self.scenario
        ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = _Conn(ws, request, combined, streams)
        self.stats.connections += 1
        if self.stats.connections > 1 and sc.lost_on_reconnect:
            self._skip += sc.lost_on_reconnect
        self.conns.add(conn)
        self._subscribed.set()
        pinger = asyncio.create_task(self._pinger(conn)) if sc.ping_interval_s > 0 else None
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._request(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    if conn.no_pong:
                        self.stats.pings_ignored += 1
                    else:
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    self.stats.pongs_received += 1
        except (ConnectionError, RuntimeError):
            pass
        finally:
            conn.dead = True
            self.conns.discard(conn)
            if pinger is not None:
                pinger.cancel()
        return ws

    async def _request(self, conn: _Conn, text: str) -> None:
        """Binance's live subscribing: SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS."""
        try:
            req = orjson.loads(text)
            method, rid = req.get("method"), req.get("id")
        except (orjson.JSONDecodeError, AttributeError):
            await conn.ws.send_frame(b'{"error":{"code":3,"msg":"Invalid JSON"}}', WSMsgType.TEXT)
            return
        params = [p for p in req.get("params") or [] if isinstance(p, str)]
        result: Any = None
        if method == "SUBSCRIBE":
            conn.streams.update(params)
            self._subscribed.set()
        elif method == "UNSUBSCRIBE":
            conn.streams.difference_update(params)
        elif method == "LIST_SUBSCRIPTIONS":
            result = sorted(conn.streams)
        else:
            await conn.ws.send_frame(orjson.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": rid}),
                                     WSMsgType.TEXT)
            return
        await conn.ws.send_frame(orjson.dumps({"result": result, "id": rid}), WSMsgType.TEXT)

    async def _pinger(self, conn: _Conn) -> None:
        while not conn.ws.closed:
            await asyncio.sleep(self.scenario.ping_interval_s)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.ping(b"tradedesk-fake")
                self.stats.pings_sent += 1


def _s(d: Decimal) -> str:
    return f"{d:.8f}"


def _symbol_info(sym: str, f: dict[str, str]) -> dict[str, Any]:
    return {
        "symbol": sym, "status": "TRADING", "baseAsset": f["base"], "baseAssetPrecision": 8, "quoteAsset": "USDT",
        "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": f["tick"], "maxPrice": "1000000.00000000", "tickSize": f["tick"]},
            {"filterType": "LOT_SIZE", "minQty": f["min_qty"], "maxQty": "9000.00000000", "stepSize": f["step"]},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "1000.00000000", "stepSize": "0.00000000"},
            {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
             "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
            {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
             "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
            {"filterType": "NOTIONAL", "minNotional": f["min_notional"], "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT", "MARGIN"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


# ---------------------------------------------------------------------------- command line


def _scenario_from_args(items: list[str], base: Scenario) -> Scenario:
    fields = {f: type(getattr(base, f)) for f in base.__dataclass_fields__}
    kw: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown scenario key {key!r} (known: {', '.join(fields)})")
        if key == "klines_fail":
            kw[key] = tuple(filter(None, value.split(",")))
        elif key == "speed":
            kw[key] = None if value in ("", "max", "none") else float(value)
        elif key == "window_s":
            kw[key] = None if value in ("", "none") else float(value)
        elif fields[key] is bool:
            kw[key] = value.lower() in ("1", "true", "yes")
        else:
            kw[key] = fields[key](value)
    return Scenario(**{**base.__dict__, **kw})


async def _serve(args: argparse.Namespace) -> int:
    sc = _scenario_from_args(args.scenario, Scenario(speed=None if args.speed == "max" else float(args.speed),
                                                     history_s=args.history_s, lifetime_s=args.lifetime_s,
                                                     ping_interval_s=20.0))
    fx = FakeExchange([Path(p) for p in args.paths], sc, port=args.port)
    await fx.start()
    print(f"fake exchange on {fx.ws_url} (REST {fx.rest_url}); {len(fx.stream)} frames to stream; "
          f"try: tradedesk --set exchange.ws_url={fx.ws_url} --set exchange.rest_url={fx.rest_url}",
          file=sys.stderr, flush=True)
    try:
        await fx.done.wait()
        await asyncio.sleep(0.5)
    finally:
        await fx.stop()
        print(f"fake exchange done: {orjson.dumps(fx.stats.as_dict()).decode()}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.testing.fake_exchange",
                                description="Serve recordings as a fake Binance spot exchange on 127.0.0.1.")
    p.add_argument("paths", nargs="+", help="recordings (<recv_ns> <json> lines, gzip or plain)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--speed", default="1", help="multiple of recorded time, or 'max' (default 1)")
    p.add_argument("--history-s", type=float, default=120.0, help="seconds of the recording kept as kline history")
    p.add_argument("--lifetime-s", type=float, default=3600.0, help="stop after this long whatever happens")
    p.add_argument("--scenario", action="append", default=[], metavar="KEY=VALUE",
                   help="fault scenario field, e.g. drop_every=5000 gaps=2 depth_429=1 (repeatable)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

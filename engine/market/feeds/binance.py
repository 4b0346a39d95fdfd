"""Binance spot market data over one combined-stream websocket (the ``websockets`` package).

One connection carries ``<sym>@trade``, ``<sym>@depth@100ms`` and ``<sym>@bookTicker``
for every symbol. The loop has the usual shape: connect, subscribe (the streams are in
the URL), consume; on any failure back off with jitter and start over. Binance's rules:

- the server pings every 20 s and drops a client that does not pong within a minute;
  ``websockets`` answers pings by itself. We also ping the server (``ping_interval_s``)
  and treat a missing pong within ``ping_timeout_s`` as a dead connection;
- a connection is cut after 24 h: we reconnect on our own before that
  (``reconnect_before_s``), at a moment we choose;
- a stream that says nothing for ``stale_after_s`` is STALE; a connection on which no
  stream says anything for that long is dead (a half-open socket) and is dropped.

Frames are queued verbatim with their receive stamp; parsing happens on the consumer,
so the recorder writes exactly what arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus, WebSocketException

from engine.core.events import BookState
from engine.market.feeds.base import (
    OFFLINE_HINT,
    Backoff,
    FeedConfig,
    FeedCounters,
    Item,
    Kind,
    StreamStatus,
    cause_of,
    put,
    secs,
)
from engine.market.parse import MAX_FRAME_BYTES

log = logging.getLogger(__name__)

#: Largest frame the socket accepts. Above the parser's limit on purpose: a too-big frame
#: is then counted and skipped by the parser instead of costing a reconnect.
MAX_WS_FRAME = 4 * MAX_FRAME_BYTES
_PREFIX = b'{"stream":"'


def stream_names(symbols: list[str]) -> list[str]:
    """The combined-stream names for ``ETHUSDT`` style symbols, in subscription order."""
    out = []
    for s in symbols:
        s = s.lower()
        out += [f"{s}@trade", f"{s}@depth@100ms", f"{s}@bookTicker"]
    return out


class BinanceFeed:
    """Binance combined stream → ``(Kind.FRAME, recv_ns, payload)`` items on ``queue``."""

    venue = "binance"

    def __init__(
        self,
        symbols: list[str],
        cfg: FeedConfig,
        queue: asyncio.Queue[Item],
        *,
        max_failed_connects: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.queue = queue
        self.names = stream_names(symbols)
        self.streams: dict[str, StreamStatus] = {n: StreamStatus(n) for n in self.names}
        self._by_bytes = {n.encode(): self.streams[n] for n in self.names}
        self.counters = FeedCounters()
        self.status = "not started"
        self.connected = False
        self.connected_since: float | None = None
        self.max_failed_connects = max_failed_connects
        self.backoff = Backoff(cfg.backoff_base_s, cfg.backoff_max_s, rng or random.Random(cfg.seed))
        self.delays: list[float] = []  # every backoff delay taken, for the status line and tests
        self.disconnect_times: list[float] = []  # monotonic, when each connection was found dead
        self._stop = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._last_any = 0.0
        self._blocked = False
        self._close_cause = ""
        self._planned = False
        self._closing: asyncio.Future[None] | None = None
        self._down_kind = ""  # why the last connection ended: closed / lost / keepalive / stale / planned
        self._retry_after = 0.0  # a 429/418 on connect said to wait this long
        self.done = False

    @property
    def url(self) -> str:
        return f"{self.cfg.ws_url}/stream?streams=" + "/".join(self.names)

    # -- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """Close the connection cleanly; ``run()`` returns once it is closed."""
        self._stop.set()
        ws = self._ws
        if ws is not None:
            # The reader sees the close and run() returns; everything received before it is kept.
            self._closing = asyncio.ensure_future(ws.close(1000, "client stopping"))

    async def run(self) -> None:
        failures = 0  # connection attempts in a row that never got in
        try:
            while not self._stop.is_set():
                cause, got_in, had_data = await self._session()
                if self._stop.is_set():
                    break
                if got_in:
                    failures = 0
                    await self._mark_down(cause)
                else:
                    failures += 1
                    self.counters.failed_connects += 1
                if self.max_failed_connects is not None and failures >= self.max_failed_connects:
                    self.status = f"stopped: cannot reach {self.cfg.ws_url} ({cause})"
                    log.warning("binance feed: %s", self.status)
                    return
                if self._planned:
                    delay = 0.0
                else:
                    if had_data:
                        self.backoff.reset()  # the last connection was healthy: start the ladder again
                    delay = max(self.backoff.next(), self._retry_after)
                    self._retry_after = 0.0
                    self.delays.append(delay)
                if got_in:
                    self.status = f"disconnected ({cause}); reconnecting in {secs(delay)}"
                else:
                    self.status = f"cannot reach {self.cfg.ws_url}: {cause}; retrying in {secs(delay)} — {OFFLINE_HINT}"
                log.warning("binance feed: %s", self.status)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        finally:
            self.done = True
            self.connected = False

    async def _session(self) -> tuple[str, bool, bool]:
        """One connection, start to end: (why it ended, whether it got in, whether data came)."""
        cfg = self.cfg
        self._close_cause = ""
        self._down_kind = ""
        self._planned = False
        self.connected_since = None
        frames0 = self.counters.frames
        self.status = f"connecting to {cfg.ws_url} …"
        try:
            async with connect(
                self.url,
                open_timeout=cfg.timeout_s,
                ping_interval=cfg.ping_interval_s,
                ping_timeout=cfg.ping_timeout_s,
                close_timeout=min(2.0, cfg.timeout_s),
                max_size=MAX_WS_FRAME,
                max_queue=64,
            ) as ws:
                await self._on_connected(ws)
                watchdog = asyncio.create_task(self._watchdog(ws))
                try:
                    await self._read(ws)
                finally:
                    watchdog.cancel()
                    self._ws = None
            cause = "closed"
        except asyncio.CancelledError:
            raise
        except ConnectionClosedOK as exc:
            rc = exc.rcvd
            self._down_kind = self._down_kind or "closed"
            cause = self._close_cause or (f"closed by the exchange (code {rc.code} {rc.reason})".strip()
                                          if rc else "closed")
        except ConnectionClosed as exc:
            self._down_kind = self._down_kind or ("keepalive" if "keepalive" in str(exc) else "lost")
            cause = self._close_cause or f"connection lost ({cause_of(exc)})"
        except InvalidStatus as exc:
            status = exc.response.status_code
            cause = f"HTTP {status} on connect"
            retry = exc.response.headers.get("Retry-After")
            if status in (418, 429) and retry and retry.isdigit():
                self._retry_after = float(retry)  # the next wait is at least this long
        except (OSError, TimeoutError, WebSocketException) as exc:
            cause = cause_of(exc)
        return cause, self.connected_since is not None, self.counters.frames > frames0

    async def _on_connected(self, ws: ClientConnection) -> None:
        now = time.monotonic()
        self._ws = ws
        self.connected = True
        self.connected_since = now
        self._last_any = now
        self.counters.connects += 1
        if self.counters.connects > 1:
            self.counters.reconnects += 1
        for st in self.streams.values():
            st.state = BookState.SYNCING
        self.status = f"connected to {self.cfg.ws_url} ({len(self.names)} streams)"
        if self._stop.is_set():  # stopped while connecting
            self._closing = asyncio.ensure_future(ws.close(1000, "client stopping"))
        # Queued before any frame of this connection, so the resync precedes the new diffs.
        await put(self.queue, (Kind.CONNECTED, time.time_ns(), self.venue, self.counters.connects), self.counters)

    async def _mark_down(self, cause: str) -> None:
        was_connected = self.connected
        self.connected = False
        for st in self.streams.values():
            st.state = BookState.STALE if st.last_mono is not None else BookState.SYNCING
        if was_connected:
            self.disconnect_times.append(time.monotonic())
            key = self._down_kind or "lost"
            self.counters.disconnects[key] = self.counters.disconnects.get(key, 0) + 1
            if self._planned:
                self.counters.planned_reconnects += 1
            await put(self.queue, (Kind.DISCONNECTED, time.time_ns(), self.venue, cause), self.counters)

    # -- reading --------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        queue, counters, by_bytes = self.queue, self.counters, self._by_bytes
        live = BookState.LIVE
        while True:
            msg = await ws.recv()
            ts = time.time_ns()
            mono = time.monotonic()
            self._last_any = mono
            if isinstance(msg, str):
                payload = msg.encode()
                counters.frames += 1
                if payload.startswith(_PREFIX):
                    st = by_bytes.get(payload[11:payload.find(b'"', 11)])
                    if st is not None:
                        st.last_mono = mono
                        st.messages += 1
                        if st.state is not live:
                            st.state = live
                item: Item = (Kind.FRAME, ts, payload)
            else:
                counters.binary_frames += 1
                item = (Kind.BINARY, ts, len(msg))
            if queue.full():
                self._blocked = True  # our own backlog: not the exchange's silence
                await put(queue, item, counters)
                self._blocked = False
                self._last_any = time.monotonic()
            else:
                queue.put_nowait(item)

    async def _watchdog(self, ws: ClientConnection) -> None:
        cfg = self.cfg
        stale = cfg.stale_after_s
        while True:
            await asyncio.sleep(cfg.check_interval_s)
            now = time.monotonic()
            for st in self.streams.values():
                if st.state is BookState.LIVE and st.last_mono is not None and now - st.last_mono > stale:
                    st.state = BookState.STALE
            if self._blocked:
                continue
            silent = now - self._last_any
            if silent > stale:
                self.counters.stale_detections.append(silent)
                self._down_kind = "stale"
                self._close_cause = f"no data for {silent:.1f} s (stale connection)"
                log.warning("binance feed: %s; dropping it", self._close_cause)
                # A half-open socket may never answer a close handshake: cut it.
                ws.transport.abort()
                return
            if self.connected_since is not None and now - self.connected_since > cfg.reconnect_before_s:
                self._planned = True
                self._down_kind = "planned"
                self._close_cause = f"planned reconnect after {now - self.connected_since:.0f} s (before the 24 h cut)"
                await ws.close(1000, "planned reconnect")
                return

    # -- views ----------------------------------------------------------------------------

    def stream_views(self) -> dict[str, dict[str, object]]:
        now = time.monotonic()
        return {n: st.view(now) for n, st in self.streams.items()}

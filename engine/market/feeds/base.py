"""The feed interface, the per-stream status it publishes, and the reconnect backoff.

A feed is a small port: ``await feed.run()`` connects, subscribes and consumes until
``feed.stop()`` (or until it gives up, when told to); whatever it receives goes into the
driver's one bounded queue as :class:`Item` tuples, so the engine sees every venue's data
in a single order on a single consumer. Concrete feeds: ``engine.market.feeds.binance``
(Binance combined stream over ``websockets``) and ``engine.market.feeds.ccxtpro`` (any ccxt.pro
venue).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.core.events import BookState
from engine.core.settings import Settings

log = logging.getLogger(__name__)

OFFLINE_HINT = "try `tradedesk replay PATH` or `tradedesk demo` meanwhile"


class Kind(enum.IntEnum):
    """What a queue item carries (the first element of the tuple)."""

    FRAME = 1  # (FRAME, ts_recv_ns, payload bytes): one websocket text frame, verbatim
    BINARY = 2  # (BINARY, ts_recv_ns, size): a binary frame (Binance never sends one)
    SNAPSHOT = 3  # (SNAPSHOT, ts_recv_ns, symbol, body bytes): a REST depth snapshot, verbatim
    CONNECTED = 4  # (CONNECTED, ts, venue, connection number)
    DISCONNECTED = 5  # (DISCONNECTED, ts, venue, reason)
    SEED = 6  # (SEED, ts, symbol, timeframe, bars): back-filled klines
    VENUE_BOOK = 7  # (VENUE_BOOK, ts, venue, symbol, bids, asks): a ccxt venue's book (top N)
    VENUE_TRADES = 8  # (VENUE_TRADES, ts, venue, symbol, count, last price)
    VENUE_STATE = 9  # (VENUE_STATE, ts, venue, symbol, BookState, reason)


Item = tuple[Any, ...]


@dataclass(frozen=True)
class FeedConfig:
    """The ``[exchange]`` settings a feed needs, read once."""

    ws_url: str = "wss://stream.binance.com:9443"
    rest_url: str = "https://api.binance.com"
    stale_after_s: float = 5.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    timeout_s: float = 10.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    reconnect_before_s: float = 85_800.0
    snapshot_limit: int = 1000
    backfill: bool = True
    backfill_bars: int = 500
    extra_venues: tuple[str, ...] = ()
    seed: int = 7

    @classmethod
    def from_settings(cls, cfg: Settings) -> FeedConfig:
        ex = cfg.exchange
        return cls(
            ws_url=ex.ws_url.rstrip("/"),
            rest_url=ex.rest_url.rstrip("/"),
            stale_after_s=ex.stale_after_s,
            ping_interval_s=ex.ping_interval_s,
            ping_timeout_s=ex.ping_timeout_s,
            timeout_s=ex.timeout_s,
            backoff_base_s=ex.backoff_base_s,
            backoff_max_s=ex.backoff_max_s,
            reconnect_before_s=ex.reconnect_before_s,
            snapshot_limit=ex.snapshot_limit,
            backfill=ex.backfill,
            backfill_bars=ex.backfill_bars,
            extra_venues=tuple(ex.extra_venues),
            seed=cfg.general.seed,
        )

    @property
    def check_interval_s(self) -> float:
        """How often the staleness watchdog looks: a quarter of the threshold, at most 1 s."""
        return min(1.0, self.stale_after_s / 4)


class Backoff:
    """Capped exponential backoff with jitter ("equal jitter": half fixed, half random).

    The fixed half keeps a flapping server from being hammered in a tight loop; the
    random half keeps many clients from reconnecting in lockstep after an outage.
    """

    def __init__(self, base_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.base = base_s
        self.cap = max_s
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class StreamStatus:
    """One subscribed stream as the header shows it: state and age of the last message."""

    name: str
    state: BookState = BookState.SYNCING
    last_mono: float | None = None
    messages: int = 0

    def age_s(self, now: float | None = None) -> float | None:
        if self.last_mono is None:
            return None
        return (time.monotonic() if now is None else now) - self.last_mono

    def view(self, now: float) -> dict[str, Any]:
        age = self.age_s(now)
        return {"state": self.state.value, "age_s": None if age is None else round(age, 2), "messages": self.messages}


@dataclass
class FeedCounters:
    connects: int = 0  # successful connections (the first one included)
    reconnects: int = 0  # successful connections after the first
    planned_reconnects: int = 0  # reconnects we chose (before the 24 h cut)
    failed_connects: int = 0
    disconnects: dict[str, int] = field(default_factory=dict)  # by cause
    stale_detections: list[float] = field(default_factory=list)  # silence (s) when each was noticed
    frames: int = 0
    binary_frames: int = 0
    queue_full: int = 0  # times the reader found the queue full (the engine fell behind)

    def as_dict(self) -> dict[str, Any]:
        return {
            "connects": self.connects,
            "reconnects": self.reconnects,
            "planned_reconnects": self.planned_reconnects,
            "failed_connects": self.failed_connects,
            "disconnects": dict(self.disconnects),
            "stale_detections": len(self.stale_detections),
            "max_stale_detection_s": round(max(self.stale_detections), 3) if self.stale_detections else None,
            "frames": self.frames,
            "binary_frames": self.binary_frames,
            "queue_full": self.queue_full,
        }


class Feed(Protocol):
    """What the live driver needs from a venue adapter."""

    venue: str
    streams: dict[str, StreamStatus]
    counters: FeedCounters
    status: str
    connected: bool

    async def run(self) -> None: ...

    def stop(self) -> None: ...


async def put(queue: asyncio.Queue[Item], item: Item, counters: FeedCounters) -> None:
    """Queue an item; when the queue is full, say so once per episode and wait (backpressure)."""
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        counters.queue_full += 1
        if counters.queue_full in (1, 10, 100) or counters.queue_full % 1000 == 0:
            log.warning("feed queue full (%d items): the engine is behind the feed", queue.maxsize)
        await queue.put(item)


def secs(d: float) -> str:
    """A delay for humans: ``0.05 s``, ``1.5 s``, ``8 s``."""
    if d < 1:
        return f"{d:.2f} s"
    return f"{d:.1f} s" if d < 10 else f"{d:.0f} s"


def cause_of(exc: BaseException) -> str:
    """A short, secret-free description of a connection error for the status line."""
    text = str(exc).strip() or type(exc).__name__
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text

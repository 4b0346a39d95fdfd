"""The message bus: bounded queues, one consumer each, plus inline handlers.

Hot market data does not travel here message by message (the data engine applies it
synchronously); the bus carries commands from the UI and the decision code, and the
lower-rate events (fills, positions, signals, decisions, training) to subscribers such
as the UI, the ledger writer and the headless logger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Subscription:
    """A bounded queue fed by the bus. When full, the oldest message is dropped and counted."""

    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0

    def put(self, msg: object) -> None:
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            # A slow consumer must never stall the engine: drop the oldest and say so.
            self.queue.get_nowait()
            self.queue.put_nowait(msg)
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("bus subscriber %s is full: %d messages dropped", self.name, self.dropped)

    async def get(self) -> Any:
        return await self.queue.get()

    def drain(self) -> list[Any]:
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                return out


class Bus:
    """Publish events to inline handlers (by type) and to bounded queue subscribers."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Callable[[Any], None]]] = {}
        self._subs: list[Subscription] = []
        self.published = 0

    def on(self, kind: type, handler: Callable[[Any], None]) -> None:
        """Call ``handler(msg)`` synchronously for every published ``kind``."""
        self._handlers.setdefault(kind, []).append(handler)

    def subscribe(self, name: str, maxsize: int = 10_000) -> Subscription:
        sub = Subscription(name, maxsize)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, msg: object) -> None:
        self.published += 1
        for handler in self._handlers.get(type(msg), ()):
            try:
                handler(msg)
            except Exception:  # a faulty subscriber must not take the engine down
                log.exception("handler %r failed on %s", handler, type(msg).__name__)
        for sub in self._subs:
            sub.put(msg)

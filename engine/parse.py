"""Parse Binance combined-stream frames and the ``<recv_ns> <json>`` capture format.

Numbers are validated where they enter: a price or quantity that is empty, not a
number, non-finite, absurdly large (``1e400``) or not positive is rejected, and the
whole message is counted and skipped. Nothing downstream ever sees a bad number.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import re

import orjson

from engine.events import (
    NS_PER_MS,
    BestBidAsk,
    BookDelta,
    BookSnapshot,
    Level,
    MarketData,
    Trade,
)

#: Frames larger than this are refused before decoding (Binance frames are < 100 KiB;
#: a 1,000-level REST snapshot is ~60 KiB).
MAX_FRAME_BYTES = 1 << 20
#: Largest decimal exponent accepted: prices and sizes beyond 1e15 are not real.
MAX_ADJUSTED_EXPONENT = 15


class BadMessage(ValueError):
    """A message we refuse; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class ParseStats:
    """What the parser saw. ``rejected`` counts by reason (malformed_json, bad_number ...)."""

    messages: int = 0
    parsed: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "parsed": dict(self.parsed),
            "rejected": dict(self.rejected),
            "rejected_total": self.rejected_total,
        }


#: A plain non-negative decimal of at most 16 integer digits: excludes "", "NaN",
#: "Infinity", "-1", "1e400" in one C-level match (the per-level hot path).
_PLAIN = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,20})?").fullmatch


#: The same, for many numbers joined by "|": one regex pass validates a whole side.
_PLAIN_LIST = re.compile(r"(?:[0-9]{1,16}(?:\.[0-9]{1,20})?\|)*").fullmatch


def _levels(raw: object, what: str) -> tuple[Level, ...]:
    if type(raw) is not list:
        raise BadMessage("bad_schema", f"{what} is not a list")
    if not raw:
        return ()
    try:
        flat = "|".join([x for lvl in raw for x in lvl[:2]])
    except TypeError:
        raise BadMessage("bad_number", f"{what}: a level holds a non-string") from None
    if not _PLAIN_LIST(flat + "|"):
        raise BadMessage("bad_number", f"{what}: {flat[:80]!r}")
    dec = Decimal
    prices = [dec(lvl[0]) for lvl in raw]
    if not min(prices):
        raise BadMessage("bad_number", f"{what}: zero price")
    return tuple(zip(prices, [dec(lvl[1]) for lvl in raw], strict=True))


def _num(value: object, what: str, *, allow_zero: bool) -> Decimal:
    if type(value) is not str or not _PLAIN(value):
        return _num_slow(value, what, allow_zero=allow_zero)
    d = Decimal(value)
    if not d and not allow_zero:
        raise BadMessage("bad_number", f"{what}={value!r}")
    return d


def _num_slow(value: object, what: str, *, allow_zero: bool) -> Decimal:
    """Numbers in other spellings ("1E-8", "+1") are accepted when finite and in range."""
    if not isinstance(value, str) or not value:
        raise BadMessage("bad_number", f"{what}={value!r}")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise BadMessage("bad_number", f"{what}={value!r}") from None
    if not d.is_finite() or d.adjusted() > MAX_ADJUSTED_EXPONENT:
        raise BadMessage("bad_number", f"{what}={value!r}")
    if d < 0 or (d == 0 and not allow_zero):
        raise BadMessage("bad_number", f"{what}={value!r}")
    return d


def _int(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise BadMessage("bad_schema", f"{what}={value!r}")
    return value


_UPPER: dict[str, str] = {}  # stream prefix -> symbol key, cached (a handful of symbols)


def _upper(sym: str) -> str:
    up = sym.upper()
    if len(_UPPER) < 256:  # bounded: unknown streams from a bad peer must not grow it
        _UPPER[sym] = up
    return up


def stream_symbol(symbol: str) -> str:
    """``ETH/USDT`` / ``ethusdt`` → ``ETHUSDT`` (the engine's symbol key)."""
    return symbol.replace("/", "").replace("-", "").upper()


class Parser:
    """Turns raw frames into market-data events, counting what it refuses."""

    def __init__(self, venue: str = "binance") -> None:
        self.venue = venue
        self.stats = ParseStats()

    # -- entry points ------------------------------------------------------------------

    def parse_capture_line(self, line: bytes | str, symbol_hint: str | None = None) -> MarketData | None:
        """One ``<recv_ns> <json>`` line; ``None`` (counted) when it is refused."""
        self.stats.messages += 1
        if isinstance(line, str):
            line = line.encode()
        stamp, sep, payload = line.partition(b" ")
        if not sep or not stamp.isdigit():
            self.stats.rejected["bad_line"] += 1
            return None
        return self._parse(payload, int(stamp), symbol_hint)

    def parse_frame(self, payload: bytes | str, ts_recv: int, symbol_hint: str | None = None) -> MarketData | None:
        """One websocket text frame (combined stream) or REST depth body."""
        self.stats.messages += 1
        if isinstance(payload, str):
            payload = payload.encode()
        return self._parse(payload, ts_recv, symbol_hint)

    # -- internals ---------------------------------------------------------------------

    def _parse(self, payload: bytes, ts_recv: int, symbol_hint: str | None) -> MarketData | None:
        if len(payload) > MAX_FRAME_BYTES:
            self.stats.rejected["oversized"] += 1
            return None
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.stats.rejected["malformed_json"] += 1
            return None
        try:
            ev = self.decode(obj, ts_recv, symbol_hint)
        except BadMessage as exc:
            self.stats.rejected[exc.reason] += 1
            return None
        except (KeyError, TypeError, AttributeError, IndexError):
            self.stats.rejected["bad_schema"] += 1
            return None
        if ev is None:
            return None
        self.stats.parsed[type(ev).__name__] += 1
        return ev

    def decode(self, obj: Any, ts_recv: int, symbol_hint: str | None = None) -> MarketData | None:
        """Decode an already-parsed JSON value. Raises :class:`BadMessage`."""
        if type(obj) is not dict:
            raise BadMessage("bad_schema", "not an object")
        if "stream" in obj:
            stream = obj["stream"]
            data = obj["data"]
            if type(stream) is not str or type(data) is not dict:
                raise BadMessage("bad_schema", "stream/data")
            sym, _, kind = stream.partition("@")
            symbol = _UPPER.get(sym) or _upper(sym)
            if kind == "bookTicker":
                return self._ticker(data, symbol, ts_recv)
            if kind == "trade":
                return self._trade(data, symbol, ts_recv)
            if kind.startswith("depth"):
                if kind == "depthSnapshot":  # tradedesk's own recordings wrap the REST body
                    return self._snapshot(data, symbol, ts_recv)
                return self._delta(data, symbol, ts_recv)
            raise BadMessage("unknown_stream", stream)
        if "lastUpdateId" in obj:
            if not symbol_hint:
                raise BadMessage("no_symbol", "REST snapshot without a symbol")
            return self._snapshot(obj, symbol_hint, ts_recv)
        if "result" in obj and "id" in obj:  # subscription acknowledgement
            self.stats.parsed["ack"] += 1
            return None
        if obj.get("e") == "trade":  # raw (non-combined) stream
            return self._trade(obj, str(obj["s"]).upper(), ts_recv)
        if obj.get("e") == "depthUpdate":
            return self._delta(obj, str(obj["s"]).upper(), ts_recv)
        raise BadMessage("bad_schema", "unknown message")

    def _trade(self, d: dict[str, Any], symbol: str, ts_recv: int) -> Trade:
        m = d["m"]
        if type(m) is not bool:
            raise BadMessage("bad_schema", "m")
        return Trade(
            symbol,
            _int(d["t"], "t"),
            _num(d["p"], "p", allow_zero=False),
            _num(d["q"], "q", allow_zero=False),
            m,
            _int(d["T"], "T") * NS_PER_MS,
            ts_recv,
            self.venue,
        )

    def _delta(self, d: dict[str, Any], symbol: str, ts_recv: int) -> BookDelta:
        first, final = _int(d["U"], "U"), _int(d["u"], "u")
        if final < first:
            raise BadMessage("bad_schema", "u < U")
        return BookDelta(
            symbol,
            first,
            final,
            _levels(d["b"], "b"),
            _levels(d["a"], "a"),
            _int(d["E"], "E") * NS_PER_MS,
            ts_recv,
            self.venue,
        )

    def _snapshot(self, d: dict[str, Any], symbol: str, ts_recv: int) -> BookSnapshot:
        return BookSnapshot(
            symbol,
            _int(d["lastUpdateId"], "lastUpdateId"),
            _levels(d["bids"], "bids"),
            _levels(d["asks"], "asks"),
            ts_recv,
            self.venue,
        )

    def _ticker(self, d: dict[str, Any], symbol: str, ts_recv: int) -> BestBidAsk:
        # The most frequent message (~3/4 of the stream): one regex pass over the four
        # numbers, then the strict per-field path only when that fails.
        b, bq, a, aq = d["b"], d["B"], d["a"], d["A"]
        try:
            ok = _PLAIN_LIST(f"{b}|{bq}|{a}|{aq}|") is not None and type(b) is str and type(a) is str
        except TypeError:
            ok = False
        if ok and type(bq) is str and type(aq) is str:
            dec = Decimal
            bid, ask = dec(b), dec(a)
            if not bid or not ask:
                raise BadMessage("bad_number", "zero price in bookTicker")
            return BestBidAsk(symbol, _int(d["u"], "u"), bid, dec(bq), ask, dec(aq), ts_recv, self.venue)
        return BestBidAsk(
            symbol,
            _int(d["u"], "u"),
            _num(b, "b", allow_zero=False),
            _num(bq, "B", allow_zero=True),
            _num(a, "a", allow_zero=False),
            _num(aq, "A", allow_zero=True),
            ts_recv,
            self.venue,
        )

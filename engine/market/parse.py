"""Parse Binance combined-stream frames and the ``<recv_ns> <json>`` capture format.

Numbers are validated where they enter, in exactly the exchange's spelling: Binance
sends prices and quantities as strings of digits with at most one dot and digits after
it (``"64123.45000000"``). Anything else (``""``, ``"NaN"``, ``"1E5"``, ``" 1"``,
``"+1"``, ``"-5"``, ``"0x10"``, ``"1_000"``, ``"1e400"``, a JSON number) is rejected, as
is a price that is zero; the whole message is counted (``bad_number``) and skipped, so
nothing downstream, not even its trade id, ever sees it.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from engine.core.events import (
    NS_PER_MS,
    BestBidAsk,
    BookDelta,
    BookSnapshot,
    Level,
    MarketData,
    Trade,
)
from engine.market.capture import capture_stamp

#: Frames larger than this are refused before decoding (Binance frames are < 100 KiB;
#: a 1,000-level REST snapshot is ~60 KiB).
MAX_FRAME_BYTES = 1 << 20


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


#: The exchange's spelling of a number: digits, then optionally one dot and digits, at most
#: 16 integer digits. Excludes "", "NaN", "Infinity", "-1", "+1", " 1", "1E5", "1e400",
#: "0x10", "1_000" in one C-level match (``[0-9]`` is ASCII only).
_PLAIN = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,20})?").fullmatch

#: Validated number strings → their Decimal. A hit means the string passed validation
#: before, so the hot path is one dict lookup instead of regex + Decimal(); the same
#: Decimal object comes back each time, and Decimal caches its hash, so the book's dict
#: operations on a repeated price skip the (slow) Decimal hash too. Prices and
#: quantities are kept apart so that a price hit is known non-zero without a compare.
#: Bounded: cleared when full (a bad peer sending endless new numbers costs misses only).
_PX: dict[str, Decimal] = {}
_QTY: dict[str, Decimal] = {}
_CACHE_MAX = 1 << 15


def reset_caches() -> None:
    """Forget every remembered number (benchmarks start each run cold)."""
    _PX.clear()
    _QTY.clear()


def _refuse(value: object, what: str) -> BadMessage:
    return BadMessage("bad_number", f"{what}={repr(value)[:40]}: expected the exchange's spelling (digits, an "
                                    "optional dot and digits)")


def _px_miss(value: object, what: str) -> Decimal:
    """Validate a price (plainly spelt, > 0) and remember it."""
    if type(value) is not str or not _PLAIN(value):
        raise _refuse(value, what)
    d = Decimal(value)
    if not d:
        raise BadMessage("bad_number", f"{what}={value!r}: a price must be positive")
    if len(_PX) >= _CACHE_MAX:
        _PX.clear()
    _PX[value] = d
    return d


def _qty_miss(value: object, what: str) -> Decimal:
    """Validate a quantity (plainly spelt, >= 0) and remember it."""
    if type(value) is not str or not _PLAIN(value):
        raise _refuse(value, what)
    d = Decimal(value)
    if len(_QTY) >= _CACHE_MAX:
        _QTY.clear()
    _QTY[value] = d
    return d


def _levels(raw: object, what: str) -> tuple[Level, ...]:
    if type(raw) is not list:
        raise BadMessage("bad_schema", f"{what} is not a list")
    # A plain loop: most numbers are cache hits (two dict lookups a level); the misses
    # are validated one by one. Cheaper than a bulk regex + Decimal() over every level.
    px, qty = _PX.get, _QTY.get
    out: list[Level] = []
    add = out.append
    try:
        for lvl in raw:
            ps = lvl[0]
            qs = lvl[1]
            p = px(ps)
            q = qty(qs)
            if p is None:
                p = _px_miss(ps, what)
            if q is None:
                q = _qty_miss(qs, what)
            add((p, q))
    except (TypeError, KeyError):  # a level that is not a list, or holds a list/dict
        raise BadMessage("bad_number", f"{what}: a level holds a non-string") from None
    return tuple(out)


def _num(value: object, what: str, *, allow_zero: bool) -> Decimal:
    """One number in the exchange's spelling (REST klines and filters use this too)."""
    if type(value) is not str or not _PLAIN(value):
        raise _refuse(value, what)
    d = Decimal(value)
    if not d and not allow_zero:
        raise BadMessage("bad_number", f"{what}={value!r}: must be positive")
    return d


def _int(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise BadMessage("bad_schema", f"{what}={value!r}")
    return value


def _maker(cls: type) -> Callable[..., Any]:
    """A positional constructor for a frozen slots dataclass that sets the slots directly.

    The dataclass ``__init__`` of a frozen class goes through ``object.__setattr__`` per
    field (~0.9 µs for 8 fields); the slot descriptors' own setters do the same work in
    about half that. The result is an ordinary, equal, still-frozen instance. Fails at
    import if the class gains a field with a default factory or ``__post_init__``.
    """
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    if tuple(names) != tuple(getattr(cls, "__slots__", ())) or hasattr(cls, "__post_init__") or any(
            f.default_factory is not dataclasses.MISSING for f in fields):
        raise TypeError(f"_maker cannot build {cls.__name__}")
    ns: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    sets = []
    for i, n in enumerate(names):
        ns[f"_set{i}"] = getattr(cls, n).__set__
        sets.append(f"    _set{i}(o, {n})\n")
    exec(f"def make({', '.join(names)}):\n    o = _new(_cls)\n{''.join(sets)}    return o\n", ns)  # noqa: S102
    return ns["make"]  # type: ignore[no-any-return]


_new_trade = _maker(Trade)
_new_bba = _maker(BestBidAsk)
_new_delta = _maker(BookDelta)


_UPPER: dict[str, str] = {}  # stream prefix -> symbol key, cached (a handful of symbols)


def _upper(sym: str) -> str:
    up = sym.upper()
    if len(_UPPER) < 256:  # bounded: unknown streams from a bad peer must not grow it
        _UPPER[sym] = up
    return up


def stream_symbol(symbol: str) -> str:
    """``ETH/USDT`` / ``ethusdt`` → ``ETHUSDT`` (the engine's symbol key)."""
    return symbol.replace("/", "").replace("-", "").upper()


_loads = orjson.loads

#: Streams remembered per parser (bounded like ``_UPPER``).
MAX_ROUTES = 256


class Parser:
    """Turns raw frames into market-data events, counting what it refuses."""

    def __init__(self, venue: str = "binance") -> None:
        self.venue = venue
        self._stats = ParseStats()
        # Stream name → [symbol, handler, event class name, parsed since last flush]. A
        # known stream skips the generic dispatch, and its count is a list slot bumped
        # per message, folded into ``stats`` whenever someone reads it.
        self._routes: dict[str, list[Any]] = {}

    @property
    def stats(self) -> ParseStats:
        s = self._stats
        for r in self._routes.values():
            if r[3]:
                s.parsed[r[2]] += r[3]
                s.messages += r[3]
                r[3] = 0
        return s

    @stats.setter
    def stats(self, value: ParseStats) -> None:
        self.stats  # noqa: B018  # fold pending counts into the old object first
        self._stats = value

    # -- entry points ------------------------------------------------------------------

    def parse_capture_line(self, line: bytes | str, symbol_hint: str | None = None) -> MarketData | None:
        """One ``<recv_ns> <json>`` line; ``None`` (counted) when it is refused."""
        if isinstance(line, str):
            line = line.encode()
        stamp, sep, payload = line.partition(b" ")
        if not sep or not stamp.isdigit():
            self._stats.messages += 1
            self._stats.rejected["bad_line"] += 1
            return None
        ts = capture_stamp(stamp)
        if ts is None:  # as a replayed file's line: counted and skipped
            self._stats.messages += 1
            self._stats.rejected["bad_stamp"] += 1
            return None
        return self.parse_frame(payload, ts, symbol_hint)

    def parse_frame(self, payload: bytes | str, ts_recv: int, symbol_hint: str | None = None) -> MarketData | None:
        """One websocket text frame (combined stream) or REST depth body."""
        if isinstance(payload, str):
            payload = payload.encode()
        if len(payload) > MAX_FRAME_BYTES:
            stats = self._stats
            stats.messages += 1
            stats.rejected["oversized"] += 1
            return None
        try:
            obj = _loads(payload)
        except orjson.JSONDecodeError:
            stats = self._stats
            stats.messages += 1
            stats.rejected["malformed_json"] += 1
            return None
        try:
            if type(obj) is dict and (route := self._routes.get(obj.get("stream"))) is not None:  # type: ignore[arg-type]
                data = obj["data"]
                if type(data) is not dict:
                    raise BadMessage("bad_schema", "stream/data")
                ev = route[1](data, route[0], ts_recv)
                route[3] += 1
                return ev  # type: ignore[no-any-return]
            ev = self.decode(obj, ts_recv, symbol_hint)
        except BadMessage as exc:
            stats = self._stats
            stats.messages += 1
            stats.rejected[exc.reason] += 1
            return None
        except (KeyError, TypeError, AttributeError, IndexError):
            stats = self._stats
            stats.messages += 1
            stats.rejected["bad_schema"] += 1
            return None
        stats = self._stats
        stats.messages += 1
        if ev is None:
            return None
        stats.parsed[type(ev).__name__] += 1
        return ev

    # -- internals ---------------------------------------------------------------------

    def _route(self, stream: str, symbol: str, handler: Callable[..., MarketData], kind: type) -> None:
        if len(self._routes) < MAX_ROUTES:
            self._routes[stream] = [symbol, handler, kind.__name__, 0]

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
                ev: MarketData = self._ticker(data, symbol, ts_recv)
                self._route(stream, symbol, self._ticker, BestBidAsk)
                return ev
            if kind == "trade":
                ev = self._trade(data, symbol, ts_recv)
                self._route(stream, symbol, self._trade, Trade)
                return ev
            if kind.startswith("depth"):
                if kind == "depthSnapshot":  # tradedesk's own recordings wrap the REST body
                    return self._snapshot(data, symbol, ts_recv)
                ev = self._delta(data, symbol, ts_recv)
                self._route(stream, symbol, self._delta, BookDelta)
                return ev
            raise BadMessage("unknown_stream", stream)
        if "lastUpdateId" in obj:
            if not symbol_hint:
                raise BadMessage("no_symbol", "REST snapshot without a symbol")
            return self._snapshot(obj, symbol_hint, ts_recv)
        if "result" in obj and "id" in obj:  # subscription acknowledgement
            self._stats.parsed["ack"] += 1
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
        tid = d["t"]
        if type(tid) is not int or tid < 0:
            _int(tid, "t")
        ps, qs = d["p"], d["q"]
        try:
            p = _PX.get(ps)
            q = _QTY.get(qs)
        except TypeError:  # unhashable: the miss path refuses it as bad_number
            p = q = None
        if p is None:
            p = _px_miss(ps, "p")
        if q is None:
            q = _qty_miss(qs, "q")
        if not q:
            raise BadMessage("bad_number", f"q={qs!r}")
        t = d["T"]
        if type(t) is not int or t < 0:
            _int(t, "T")
        return _new_trade(symbol, tid, p, q, m, t * NS_PER_MS, ts_recv, self.venue)  # type: ignore[no-any-return]

    def _delta(self, d: dict[str, Any], symbol: str, ts_recv: int) -> BookDelta:
        first, final = d["U"], d["u"]
        if type(first) is not int or type(final) is not int or first < 0 or final < first:
            _int(first, "U"), _int(final, "u")
            raise BadMessage("bad_schema", "u < U")
        bids, asks = _levels(d["b"], "b"), _levels(d["a"], "a")
        e = d["E"]
        if type(e) is not int or e < 0:
            _int(e, "E")
        return _new_delta(symbol, first, final, bids, asks, e * NS_PER_MS, ts_recv, self.venue)  # type: ignore[no-any-return]

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
        # The most frequent message (~3/4 of the stream): four cache lookups when the
        # numbers were seen before (best prices nearly always are).
        u = d["u"]
        if type(u) is not int or u < 0:
            _int(u, "u")
        bs, bqs, as_, aqs = d["b"], d["B"], d["a"], d["A"]
        try:
            px, qty = _PX.get, _QTY.get
            b, bq, a, aq = px(bs), qty(bqs), px(as_), qty(aqs)
        except TypeError:  # unhashable: the miss path refuses it as bad_number
            b = bq = a = aq = None
        if b is None:
            b = _px_miss(bs, "b")
        if bq is None:
            bq = _qty_miss(bqs, "B")
        if a is None:
            a = _px_miss(as_, "a")
        if aq is None:
            aq = _qty_miss(aqs, "A")
        return _new_bba(symbol, u, b, bq, a, aq, ts_recv, self.venue)  # type: ignore[no-any-return]

"""Binance spot REST client (aiohttp): depth snapshots, klines, exchange filters.

Every call is an idempotent GET, so retrying is safe. The rate-limit rules are Binance's:
HTTP 429 (and 418, an IP ban) carry ``Retry-After`` in seconds, and no request at all is
sent before it has passed (the limit is per IP, so one blocked endpoint blocks all of
them); 5xx and network errors are retried with capped exponential backoff and jitter;
any other 4xx is a bug or a bad symbol and is raised at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from engine.core.events import NS_PER_MS, Bar
from engine.core.symbols import SymbolFilters
from engine.market.feeds.base import Backoff, cause_of, secs
from engine.market.parse import BadMessage
from engine.market.parse import _num as parse_number

log = logging.getLogger(__name__)

#: Binance kline intervals back-filled at start: every engine timeframe (Binance spot has 1s klines).
KLINE_INTERVALS = ("1s", "1m", "5m", "15m", "1h", "4h", "1d")


class RestError(RuntimeError):
    """A REST call that failed for good (bad request, or out of attempts)."""


class RestClient:
    """GETs against ``base_url`` with Binance's rate-limit and retry rules."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        rng: random.Random | None = None,
        on_status: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.rng = rng or random.Random()
        self.on_status = on_status
        self.blocked_until = 0.0  # monotonic; set by Retry-After
        self.last_ok = 0.0  # monotonic time of the last 200
        self.counters: dict[str, int] = {"requests": 0, "ok": 0, "rate_limited": 0, "server_errors": 0,
                                         "network_errors": 0, "client_errors": 0}
        # (sent, answered, path, status) per request, monotonic seconds; status 0 = no answer
        self.log: deque[tuple[float, float, str, int]] = deque(maxlen=1000)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers={"User-Agent": "tradedesk"})
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def _say(self, text: str, level: int = logging.INFO, unreachable: bool = False) -> None:
        # Each retry is shown on the status line; the log gets a warning only for rate
        # limits (worth knowing) and from the caller when a call finally fails.
        log.log(level, "%s", text)
        if self.on_status:
            self.on_status(text, unreachable)

    async def get(self, path: str, params: dict[str, str], *, attempts: int | None = None, what: str = "") -> bytes:
        """The body of a 200 answer. ``attempts=None`` retries until cancelled."""
        url = self.base_url + path
        what = what or path
        backoff = Backoff(self.backoff_base_s, self.backoff_max_s, self.rng)
        tried = 0
        last = ""
        while attempts is None or tried < attempts:
            wait = self.blocked_until - time.monotonic()
            if wait > 0:  # honour Retry-After for every endpoint: the limit is per IP
                await asyncio.sleep(wait)
            tried += 1
            self.counters["requests"] += 1
            sent = time.monotonic()
            try:
                async with self._sess().get(url, params=params) as resp:
                    body = await resp.read()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
                self.log.append((sent, time.monotonic(), path, status))
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.log.append((sent, time.monotonic(), path, 0))
                self.counters["network_errors"] += 1
                last = cause_of(exc)
                delay = backoff.next()
                self._say(f"{what}: cannot reach {self.base_url} ({last}); retrying in {secs(delay)}", unreachable=True)
                await asyncio.sleep(delay)
                continue
            if status == 200:
                self.counters["ok"] += 1
                self.last_ok = time.monotonic()
                return body
            if status in (429, 418):
                self.counters["rate_limited"] += 1
                wait_s = _retry_after_s(retry_after)
                delay = backoff.next() if wait_s is None else wait_s
                self.blocked_until = max(self.blocked_until, time.monotonic() + delay)
                last = f"HTTP {status} (rate limited)"
                self._say(f"{what}: {last}; no REST request for {secs(delay)} (Retry-After)", logging.WARNING)
                continue
            if 500 <= status < 600:
                self.counters["server_errors"] += 1
                last = f"HTTP {status}"
                delay = backoff.next()
                self._say(f"{what}: exchange error {last}; retrying in {secs(delay)}")
                await asyncio.sleep(delay)
                continue
            self.counters["client_errors"] += 1
            raise RestError(f"{what}: HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        raise RestError(f"{what}: gave up after {tried} attempts ({last})")

    # -- endpoints ------------------------------------------------------------------------

    async def depth(self, symbol: str, limit: int = 1000, attempts: int | None = None) -> bytes:
        """The raw body of ``/api/v3/depth`` (kept verbatim for the recorder)."""
        return await self.get("/api/v3/depth", {"symbol": symbol, "limit": str(limit)},
                              attempts=attempts, what=f"depth snapshot {symbol}")

    async def klines(self, symbol: str, interval: str, limit: int = 500, attempts: int | None = 3) -> list[Bar]:
        """Closed bars from ``/api/v3/klines`` (the last kline, still open, is left out)."""
        body = await self.get("/api/v3/klines", {"symbol": symbol, "interval": interval, "limit": str(limit)},
                              attempts=attempts, what=f"klines {symbol} {interval}")
        return parse_klines(body, symbol, interval)

    async def exchange_info(self, symbols: list[str], attempts: int | None = 3) -> dict[str, SymbolFilters]:
        body = await self.get("/api/v3/exchangeInfo",
                              {"symbols": "[" + ",".join(f'"{s}"' for s in symbols) + "]"},
                              attempts=attempts, what="exchangeInfo")
        return parse_exchange_info(body)


def _retry_after_s(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except ValueError:
        return None  # an HTTP date: Binance never sends one; fall back to the backoff
    return v if 0 <= v <= 86_400 else None


def parse_klines(body: bytes, symbol: str, interval: str) -> list[Bar]:
    """Binance kline arrays → closed :class:`Bar` s, numbers checked like every market message."""
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RestError(f"klines {symbol} {interval}: not JSON") from exc
    if not isinstance(rows, list):
        raise RestError(f"klines {symbol} {interval}: expected a list")
    bars: list[Bar] = []
    # Binance's last kline is the interval still in progress: a partial bar must not pose
    # as a closed one (live trades build that bar instead).
    for k in rows[:-1]:
        try:
            if not isinstance(k, list) or len(k) < 10 or type(k[0]) is not int or type(k[8]) is not int:
                raise BadMessage("bad_schema", "kline")
            o, h, lo, c = (parse_number(k[i], "price", allow_zero=False) for i in (1, 2, 3, 4))
            vol = parse_number(k[5], "volume", allow_zero=True)
            buy = parse_number(k[9], "taker buy volume", allow_zero=True)
        except BadMessage as exc:
            log.warning("klines %s %s: skipped a bad kline (%s)", symbol, interval, exc)
            continue
        bars.append(Bar(symbol, interval, k[0] * NS_PER_MS, o, h, lo, c, vol, min(buy, vol), k[8]))
    bars.sort(key=lambda b: b.open_time)
    return bars


def parse_exchange_info(body: bytes) -> dict[str, SymbolFilters]:
    """``exchangeInfo`` → tick size, step size, min quantity and min notional per symbol."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RestError("exchangeInfo: not JSON") from exc
    out: dict[str, SymbolFilters] = {}
    for s in doc.get("symbols", []) if isinstance(doc, dict) else []:
        try:
            sym = str(s["symbol"]).upper()
            f: dict[str, dict[str, Any]] = {x["filterType"]: x for x in s.get("filters", []) if isinstance(x, dict)}
            tick = parse_number(f["PRICE_FILTER"]["tickSize"], "tickSize", allow_zero=False)
            lot = f["LOT_SIZE"]
            step = parse_number(lot["stepSize"], "stepSize", allow_zero=False)
            min_qty = parse_number(lot["minQty"], "minQty", allow_zero=True)
            notional = f.get("NOTIONAL") or f.get("MIN_NOTIONAL") or {"minNotional": "0"}
            min_notional = parse_number(str(notional.get("minNotional", "0")), "minNotional", allow_zero=True)
        except (KeyError, TypeError, BadMessage) as exc:
            log.warning("exchangeInfo: skipped a symbol with unusable filters (%s)", exc)
            continue
        out[sym] = SymbolFilters(sym, _plain(tick), _plain(step), _plain(min_qty), _plain(min_notional))
    return out


def _plain(d: Decimal) -> Decimal:
    """Drop trailing zeros without turning 10 into 1E+1."""
    n = d.normalize()
    return n.quantize(Decimal(1)) if n.as_tuple().exponent > 0 else n  # type: ignore[operator]

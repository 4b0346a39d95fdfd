"""Live execution through ccxt (async), only with ``--live`` plus a typed confirmation.

- Keys come from the environment (``engine.core.secrets``); they go straight into the ccxt
  constructor and nowhere else. Error texts are redacted before they are reported.
- Every order carries our client order id (``clientOrderId``; Binance's
  ``newClientOrderId``). The engine journals the intent before ``submit`` is called.
- Every result is classified: confirmed (ccxt returned the order), rejected (the
  exchange said no: invalid order, insufficient funds, rate limit, auth...), or unknown
  (timeout or network error after the request may have left). An unknown order is
  resolved by querying its client order id, ``live.resolve_attempts`` times
  ``live.resolve_delay_ms`` apart; it is never resent. Not found every time ⇒ never
  placed (rejected). Network errors while resolving ⇒ keep trying, the order stays
  unknown, and the engine refuses new orders meanwhile.
- Rate limits: a 429/418 (``RateLimitExceeded``/``DDoSProtection``) blocks *every*
  request until its ``Retry-After`` has passed (from ccxt's ``last_response_headers``;
  exponential backoff when the header is missing). Orders arriving meanwhile are
  rejected without a request.
- Authentication errors halt live trading (the engine's risk gate turns the report's
  ``error`` into HALTED with a message naming the environment variables, never values).
  Binance's -2015/-2014/-1022 count as authentication errors whatever class ccxt gives
  them (after a first signed success ccxt reports -2015 as ``DDoSProtection``).
- Start (one attempt): create the ccxt client, ``load_markets`` (spot markets only, no
  margin or currency calls), then ``fetch_balance``, the first signed request, which proves
  the keys. An attempt that fails closes the client (``await exchange.close()``: no aiohttp
  session is left behind). The desk starts in the background (``poll``) with at most
  ``start_attempts`` attempts, ``start_retry_s`` apart and doubling; an authentication
  error is never retried. Refused keys, a client that cannot be built, or attempts spent:
  live trading is halted through ``ExecutorPorts.on_halt`` (the engine's trading state
  turns HALTED with that one message), and nothing more is sent.
- Sandbox/testnet through ccxt's ``set_sandbox_mode(True)`` (``live.sandbox``); ``rest_url``
  (``live.rest_url``) points every REST endpoint of the client at another server (a local
  fake exchange), keeping their paths.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import ccxt
import ccxt.async_support as ccxt_async

from engine.core import failpoints
from engine.core.events import NS_PER_MS, OrderFilled, Side, Trade
from engine.core.secrets import Credentials, load_credentials, redact
from engine.core.symbols import display_symbol
from engine.execution.executor import ExecReport, ExecutorPorts, OpenOrder, OrderRequest, OrderState, OrderType

log = logging.getLogger(__name__)

ZERO = Decimal(0)
AUTH_ERRORS = (ccxt.AuthenticationError,)  # PermissionDenied, AccountSuspended... are subclasses
RATE_ERRORS = (ccxt.RateLimitExceeded, ccxt.DDoSProtection)
#: Binance codes that mean the key pair is refused (invalid or revoked key, bad signature).
AUTH_CODES = ('"code":-2015', '"code":-2014', '"code":-1022')
MAX_BACKOFF_S = 60.0
#: Spot trading needs the spot markets only: no futures exchangeInfo, no signed currency or margin calls.
CCXT_OPTIONS: dict[str, Any] = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}


class VenueUnavailable(RuntimeError):
    """The live executor is not started and will not be (halted, or its start attempts are spent)."""


def is_auth_error(exc: BaseException) -> bool:
    """The exchange refused the credentials (by ccxt's class, or by Binance's code in the answer)."""
    if isinstance(exc, AUTH_ERRORS):
        return True
    return isinstance(exc, ccxt.BaseError) and any(c in str(exc).replace(" ", "") for c in AUTH_CODES)


def point_at(urls: Any, base: str) -> Any:
    """ccxt's ``urls['api']`` with every address moved to ``base`` (scheme, host and port; paths kept)."""
    if isinstance(urls, str):
        u = urlsplit(urls)
        return base.rstrip("/") + u.path + (f"?{u.query}" if u.query else "")
    if isinstance(urls, dict):
        return {k: point_at(v, base) for k, v in urls.items()}
    return urls


def _dec(x: Any) -> Decimal | None:
    if x is None:
        return None
    try:
        d = Decimal(str(x))
    except ArithmeticError:
        return None
    return d if d.is_finite() else None


def _err(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")[:300]


class LiveExecutor:
    """Orders on a real (or testnet) exchange through ccxt's async API."""

    name = "live"

    def __init__(
        self,
        exchange_id: str,
        credentials: Credentials,
        *,
        sandbox: bool = True,
        timeout_ms: int = 10_000,
        resolve_attempts: int = 5,
        resolve_delay_s: float = 1.0,
        exchange_factory: Callable[[dict[str, Any]], Any] | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        rest_url: str = "",
        start_attempts: int = 3,
        start_retry_s: float = 1.0,
    ) -> None:
        self.exchange_id = exchange_id
        self.sandbox = sandbox
        self.timeout_ms = timeout_ms
        self.resolve_attempts = resolve_attempts
        self.resolve_delay_s = resolve_delay_s
        self.rest_url = rest_url
        self.start_attempts = start_attempts
        self.start_retry_s = start_retry_s
        self.start_attempts_made = 0
        self._credentials = credentials
        self._factory = exchange_factory
        self.now_ns = now_ns
        self.on_report: Callable[[ExecReport], None] | None = None
        self.on_halt: Callable[[str, str], None] | None = None
        self.confirmation_phrase = f"LIVE {exchange_id.upper()}" + (" TESTNET" if sandbox else "")
        self.exchange: Any = None
        self._start_lock: asyncio.Lock | None = None
        self._start_task: asyncio.Task[None] | None = None
        self.started = False
        self.start_error = ""
        self.halted = ""  # set on an authentication error: nothing more is sent
        self._blocked_until = 0.0  # monotonic: no request before this (Retry-After)
        self._backoff = 1.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._to_resolve: list[OpenOrder] = []
        self._orders: dict[str, OrderRequest] = {}  # client id -> the order, for cancels and queries
        self.requests = 0
        self.balances: dict[str, Decimal] = {}
        self._incomplete: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<LiveExecutor {self.exchange_id}{' sandbox' if self.sandbox else ''}>"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """One start attempt: create the ccxt client, load markets, read the balance (the first
        signed request: it proves the keys), then resolve orders left unknown by the last run.

        Raises on failure, after closing the client; refused keys halt live trading first.
        """
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.started:
                return
            if self.halted:
                raise VenueUnavailable(f"live trading halted: {self.halted}")
            self.start_attempts_made += 1
            try:
                self.exchange = self._new_exchange()
                await self._call("load_markets")
                self.balances = _free_balances(await self._call("fetch_balance"))
            except Exception as exc:
                self.start_error = _err(exc)
                await self._discard_exchange()
                if is_auth_error(exc):
                    self._halt(f"the exchange refused the API credentials at start ({self.start_error})", auth=True)
                elif not isinstance(exc, ccxt.BaseError):  # a bad exchange id, a broken client: retrying cannot help
                    self._halt(f"the live executor cannot start ({self.start_error})")
                raise
            self.started = True
            self.start_error = ""
            pending, self._to_resolve = self._to_resolve, []
            for oo in pending:
                self._spawn(self._resolve(oo.request))

    def _new_exchange(self) -> Any:
        config: dict[str, Any] = {"enableRateLimit": True, "timeout": self.timeout_ms,
                                  "options": {k: (dict(v) if isinstance(v, dict) else v) for k, v in CCXT_OPTIONS.items()},
                                  **self._credentials.ccxt_config()}
        try:
            if self._factory is not None:
                exchange = self._factory(config)
            else:
                exchange = getattr(ccxt_async, self.exchange_id)(config)
        finally:
            del config  # the only other holder of the values; gone before any await can fail
        if self.sandbox:
            exchange.set_sandbox_mode(True)
        if self.rest_url:
            exchange.urls["api"] = point_at(exchange.urls.get("api"), self.rest_url)
        return exchange

    async def _discard_exchange(self) -> None:
        """Close the client of a failed start: its aiohttp session must not outlive it."""
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            try:
                await exchange.close()
            except Exception as exc:
                log.warning("closing the exchange client failed: %s", _err(exc))

    def _halt(self, reason: str, *, auth: bool = False) -> None:
        """Stop live trading for this process: nothing more is sent; the engine hears it once."""
        if self.halted:
            return
        self.halted = redact(reason)
        if self.on_halt is not None:
            self.on_halt("AuthenticationError" if auth else "VenueUnavailable", self.halted)
        else:
            log.error("live trading halted: %s", self.halted)

    async def _start_in_background(self) -> None:
        """At most ``start_attempts`` starts, ``start_retry_s`` apart and doubling; then halt."""
        delay = self.start_retry_s
        for attempt in range(1, self.start_attempts + 1):
            try:
                await self.start()
                return
            except Exception:  # start() recorded why (and halted on refused keys)
                if self.halted:
                    return
            if attempt == self.start_attempts:
                self._halt(f"could not start the live executor in {attempt} attempts (last: {self.start_error}); "
                           "live orders are off until tradedesk is restarted")
                return
            log.warning("live executor: start attempt %d of %d failed (%s); next in %.3g s",
                        attempt, self.start_attempts, self.start_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    async def _ready(self) -> None:
        """Wait until started (the background start, bounded); raise VenueUnavailable if it will not be."""
        if self.started:
            return
        if self.halted:
            raise VenueUnavailable(f"live trading halted: {self.halted}")
        self._ensure_started()
        task = self._start_task
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait({task})
        if not self.started:
            raise VenueUnavailable(self.halted or self.start_error or "the live executor did not start")

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._discard_exchange()
        self.started = False

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("live executor task failed: %s", _err(task.exception()))  # type: ignore[arg-type]

    def _ensure_started(self) -> None:
        """Start in the background, once per process (its attempts are bounded)."""
        if self.started or self.halted or self._start_task is not None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._start_task = self._spawn(self._start_in_background())

    # ------------------------------------------------------------------ requests

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One request to the exchange, never inside a Retry-After window."""
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.requests += 1
        try:
            result = await getattr(self.exchange, method)(*args, **kwargs)
        except RATE_ERRORS as exc:
            if not is_auth_error(exc):
                self._block()
            raise
        self._backoff = 1.0
        return result

    def _block(self) -> None:
        headers = getattr(self.exchange, "last_response_headers", None) or {}
        retry = None
        for k, v in dict(headers).items():
            if str(k).lower() == "retry-after":
                try:
                    retry = float(v)
                except (TypeError, ValueError):
                    retry = None
        if retry is None or retry < 0:
            retry = self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
        self._blocked_until = max(self._blocked_until, time.monotonic() + retry)
        log.warning("exchange rate limit: no requests for %.1f s", retry)

    def _emit(self, rep: ExecReport) -> None:
        if self.on_report is not None:
            self.on_report(rep)

    # ------------------------------------------------------------------ the Executor interface

    def bind(self, ports: ExecutorPorts) -> None:
        self.on_report = ports.on_report
        self.on_halt = ports.on_halt
        self.now_ns = ports.now_ns  # reports are stamped on the engine's clock

    def submit(self, order: OrderRequest, now: int) -> list[ExecReport]:
        if self.halted:
            return [ExecReport(order.client_id, OrderState.REJECTED, now, reason=f"live trading halted: {self.halted}")]
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            return [ExecReport(order.client_id, OrderState.REJECTED, now,
                               reason=f"exchange rate limit: retry after {wait:.1f} s (nothing sent)",
                               error="RateLimitExceeded")]
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return [ExecReport(order.client_id, OrderState.REJECTED, now, reason="live executor needs a running loop")]
        self._orders[order.client_id] = order
        self._spawn(self._place(order))
        return []

    def cancel(self, client_id: str, now: int) -> list[ExecReport]:
        o = self._orders.get(client_id)
        if o is not None and self.started:
            self._spawn(self._cancel(o))
        return []

    def poll(self, now: int) -> list[ExecReport]:
        self._ensure_started()  # housekeeping reaches here once a second: connect and reconcile early
        return []

    def on_trade(self, trade: Trade) -> list[ExecReport]:
        return []

    def busy(self) -> bool:
        return False  # results arrive through on_report, not from the market path

    def restore(self, order: OpenOrder) -> None:
        self._orders[order.request.client_id] = order.request
        if self.started:
            self._spawn(self._resolve(order.request))
        else:
            self._to_resolve.append(order)

    # ------------------------------------------------------------------ order flow

    async def _place(self, o: OrderRequest) -> None:
        try:
            await self._ready()
        except Exception as exc:
            self._emit(ExecReport(o.client_id, OrderState.REJECTED, self.now_ns(),
                                  reason=f"exchange unavailable: {_err(exc)}", error=type(exc).__name__))
            return
        market = display_symbol(o.symbol)
        kind = "limit" if o.order_type is OrderType.LIMIT else "market"
        price = float(o.limit_price) if o.limit_price is not None else None
        try:
            resp = await self._call("create_order", market, kind, o.side.value.lower(), float(o.qty), price,
                                    {"clientOrderId": o.client_id})
        except ccxt.BaseError as exc:
            if not is_auth_error(exc):
                await self._refused(o, exc)
                return
            self.halted = f"the exchange refused the API credentials ({type(exc).__name__})"
            self._emit(ExecReport(o.client_id, OrderState.REJECTED, self.now_ns(), reason=_err(exc),
                                  error="AuthenticationError"))
            return
        failpoints.hit("after_send")
        await self._report_order(o, resp)

    async def _refused(self, o: OrderRequest, exc: ccxt.BaseError) -> None:
        """create_order raised something other than an authentication error: classify it."""
        if isinstance(exc, RATE_ERRORS):  # a 429/418 is an answer: the order was refused, not placed
            self._emit(ExecReport(o.client_id, OrderState.REJECTED, self.now_ns(), reason=f"rate limited: {_err(exc)}",
                                  error=type(exc).__name__))
        elif isinstance(exc, ccxt.NetworkError):  # timeout, connection reset, 5xx: it may or may not be there
            self._emit(ExecReport(o.client_id, OrderState.UNKNOWN, self.now_ns(), reason=_err(exc),
                                  error=type(exc).__name__))
            await self._resolve(o)
        else:  # InvalidOrder, InsufficientFunds, BadSymbol...: refused
            self._emit(ExecReport(o.client_id, OrderState.REJECTED, self.now_ns(), reason=_err(exc),
                                  error=type(exc).__name__))

    async def _resolve(self, o: OrderRequest) -> None:
        """Find out what happened to an order by its client id; never resend it."""
        market = display_symbol(o.symbol)
        not_found = 0
        attempt = 0
        delay = self.resolve_delay_s
        while True:
            attempt += 1
            await asyncio.sleep(delay)
            try:
                await self._ready()
            except VenueUnavailable:
                return  # halted: the order stays UNKNOWN (and the engine refuses new ones) until a restart
            try:
                resp = await self._call("fetch_order", None, market, {"clientOrderId": o.client_id})
            except ccxt.OrderNotFound:
                not_found += 1
                if not_found >= self.resolve_attempts:
                    self._emit(ExecReport(o.client_id, OrderState.REJECTED, self.now_ns(),
                                          reason=f"not at the exchange after {not_found} queries by client id: "
                                                 "never placed (not resent)"))
                    return
                continue
            except ccxt.BaseError as exc:  # network trouble or rate limit: still unknown, keep asking
                if is_auth_error(exc):
                    self.halted = f"the exchange refused the API credentials ({type(exc).__name__})"
                    self._emit(ExecReport(o.client_id, OrderState.UNKNOWN, self.now_ns(), reason=_err(exc),
                                          error="AuthenticationError"))
                    return
                log.warning("resolving %s (attempt %d): %s", o.client_id, attempt, _err(exc))
                delay = min(max(delay, 0.05) * 2, MAX_BACKOFF_S)
                continue
            await self._report_order(o, resp)
            return

    async def _cancel(self, o: OrderRequest) -> None:
        client_id, market = o.client_id, display_symbol(o.symbol)
        try:
            await self._call("cancel_order", None, market, {"clientOrderId": client_id})
        except ccxt.OrderNotFound:
            pass  # already filled or gone: the query below says which
        except ccxt.BaseError as exc:
            log.warning("cancel %s failed: %s", client_id, _err(exc))
        try:
            resp = await self._call("fetch_order", None, market, {"clientOrderId": client_id})
        except ccxt.BaseError as exc:
            log.warning("after cancel, query of %s failed: %s", client_id, _err(exc))
            return
        await self._report_order(o, resp)

    async def _report_order(self, o: OrderRequest, resp: dict[str, Any]) -> None:
        """Turn a ccxt order structure into a report with its fills (trades)."""
        status = str(resp.get("status") or "").lower()
        amount = _dec(resp.get("amount")) or o.qty
        filled = _dec(resp.get("filled")) or ZERO
        exch_id = str(resp.get("id")) if resp.get("id") is not None else None
        trades = list(resp.get("trades") or [])
        if filled > 0 and sum((_dec(t.get("amount")) or ZERO for t in trades), ZERO) < filled and exch_id:
            trades = await self._order_trades(o, exch_id, resp.get("timestamp")) or trades
        fills = [f for t in trades if (f := self._fill(o, t)) is not None]
        got = sum((f.qty for f in fills), ZERO)
        if status == "open":
            state = OrderState.OPEN
        elif status == "closed" and filled >= amount:
            state = OrderState.FILLED
        elif status in ("canceled", "cancelled", "expired", "closed"):
            state = OrderState.CANCELED
        elif status == "rejected":
            state = OrderState.REJECTED if filled == 0 else OrderState.CANCELED
        else:
            state = OrderState.OPEN if filled < amount else OrderState.FILLED
        if state.terminal and got < filled:
            # The order says more was filled than the trades we could read: keep it open until
            # the trades are in, so nothing is lost; the next query completes it.
            tries = self._incomplete.get(o.client_id, 0) + 1
            self._incomplete[o.client_id] = tries
            if tries <= self.resolve_attempts:
                state = OrderState.OPEN
                self._spawn(self._resolve(o))
            else:
                log.error("order %s: exchange reports %s filled but only %s in its trades; check the account",
                          o.client_id, filled, got)
        self._emit(ExecReport(o.client_id, state, self.now_ns(), tuple(fills),
                              reason=f"exchange status {status or '?'}", exchange_id=exch_id))
        if fills:
            self._spawn(self.refresh_balance())

    async def _order_trades(self, o: OrderRequest, exch_id: str, since: Any) -> list[dict[str, Any]]:
        market = display_symbol(o.symbol)
        try:
            return list(await self._call("fetch_order_trades", exch_id, market))
        except ccxt.NotSupported:
            pass
        except ccxt.BaseError as exc:
            log.warning("trades of %s unavailable: %s", o.client_id, _err(exc))
            return []
        try:
            mine = await self._call("fetch_my_trades", market, since if isinstance(since, int) else None)
        except ccxt.BaseError as exc:
            log.warning("trades of %s unavailable: %s", o.client_id, _err(exc))
            return []
        return [t for t in mine if str(t.get("order")) == exch_id]

    async def refresh_balance(self) -> None:
        """Free balances from the exchange (what the desk shows as the live balance)."""
        try:
            bal = await self._call("fetch_balance")
        except ccxt.BaseError as exc:
            log.warning("balance unavailable: %s", _err(exc))
            return
        self.balances = _free_balances(bal)

    def _fill(self, o: OrderRequest, t: dict[str, Any]) -> OrderFilled | None:
        qty, price = _dec(t.get("amount")), _dec(t.get("price"))
        if t.get("id") is None or not qty or not price or qty <= 0 or price <= 0:
            return None
        side = Side(str(t.get("side") or o.side.value).upper())
        fee = ZERO
        fee_info = t.get("fee") or {}
        cost = _dec(fee_info.get("cost")) or ZERO
        cur = str(fee_info.get("currency") or "")
        base, _, quote = display_symbol(o.symbol).partition("/")
        if cur == quote or not cur:
            fee = cost
        elif cur == base:
            fee = cost * price  # paid in the base asset: valued at the fill price
        elif cost:
            log.warning("fee of %s paid in %s is not converted to %s", t.get("id"), cur, quote)
        ts = t.get("timestamp")
        ts_ns = int(ts) * NS_PER_MS if isinstance(ts, (int, float)) else self.now_ns()
        liq = str(t.get("takerOrMaker") or "taker")
        return OrderFilled(o.client_id, f"{self.exchange_id}:{t['id']}", o.symbol, side, qty, price, fee, ts_ns, liq)


def _free_balances(bal: dict[str, Any]) -> dict[str, Decimal]:
    free = bal.get("free") or {}
    return {str(k): d for k, v in free.items() if (d := _dec(v)) is not None}


def build_live_executor(live_cfg: Any, env: Any = None, exchange_factory: Any = None,
                        start_retry_s: float = 1.0) -> LiveExecutor:
    """A live executor from the ``[live]`` settings and the environment's API keys."""
    creds = load_credentials(env)
    return LiveExecutor(
        live_cfg.exchange, creds, sandbox=live_cfg.sandbox, timeout_ms=live_cfg.timeout_ms,
        resolve_attempts=live_cfg.resolve_attempts, resolve_delay_s=live_cfg.resolve_delay_ms / 1000,
        exchange_factory=exchange_factory, rest_url=live_cfg.rest_url, start_attempts=live_cfg.start_attempts,
        start_retry_s=start_retry_s,
    )

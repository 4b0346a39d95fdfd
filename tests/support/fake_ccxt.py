"""A fake ccxt exchange for the live-execution tests.

It implements the async unified methods :class:`engine.execution.live_executor.LiveExecutor` calls
(``load_markets``, ``create_order``, ``fetch_order``, ``fetch_order_trades``,
``cancel_order``, ``fetch_balance``, ``set_sandbox_mode``, ``close``) with Binance-like
behaviour (orders keyed by exchange id and by client order id; market orders fill at
once with one trade per call; ``last_response_headers``), and fails on a script with
ccxt's real exception classes. Nothing here talks to a network.

Scripted faults, queued per method with :meth:`FakeExchange.fail`:

- ``timeout_after_place``: the order is placed, then the call raises ``RequestTimeout``
- ``timeout``: the call raises ``RequestTimeout`` and nothing happens
- ``rate_limit``: HTTP 429 with a ``Retry-After`` header (``retry_after`` seconds)
- ``auth``: ``AuthenticationError`` whose message echoes the API key, as some venues do
- ``insufficient``, ``invalid``, ``nonce``, ``unavailable``: the obvious ccxt errors
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from decimal import Decimal
from typing import Any

import ccxt


class FakeExchange:
    id = "binance"

    def __init__(self, config: dict[str, Any], price: str = "2000.00", retry_after: float = 0.3) -> None:
        # Held like ccxt holds them (plain attributes): the executor must never print these.
        self.apiKey = config.get("apiKey")
        self.secret = config.get("secret")
        self.timeout = config.get("timeout")
        self.sandbox = False
        self.price = Decimal(price)
        self.retry_after = retry_after
        self.last_response_headers: dict[str, str] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.by_client: dict[str, str] = {}
        self.trades: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.calls: list[tuple[float, str]] = []  # (monotonic time, method) of every request
        self._faults: dict[str, deque[str]] = defaultdict(deque)
        self._next_id = 1000
        self._next_trade = 50_000
        self.rate_limited_at: list[tuple[float, float]] = []  # (when, retry-after) of each 429
        self.closed = False

    # ------------------------------------------------------------------ test controls

    def fail(self, method: str, *faults: str) -> None:
        self._faults[method].extend(faults)

    def placed(self) -> int:
        return len(self.orders)

    def requests_during_retry_after(self) -> int:
        n = 0
        for t0, ra in self.rate_limited_at:
            n += sum(1 for t, _ in self.calls if t0 < t < t0 + ra - 0.005)
        return n

    # ------------------------------------------------------------------ plumbing

    def _enter(self, method: str) -> str | None:
        self.calls.append((time.monotonic(), method))
        self.last_response_headers = {"Content-Type": "application/json"}
        fault = self._faults[method].popleft() if self._faults[method] else None
        if fault == "timeout":
            raise ccxt.RequestTimeout(f"binance POST https://testnet.binance.vision/api/v3/order timed out ({method})")
        if fault == "rate_limit":
            self.last_response_headers = {"Retry-After": str(self.retry_after)}
            self.rate_limited_at.append((time.monotonic(), self.retry_after))
            raise ccxt.RateLimitExceeded('binance 429 Too Many Requests {"code":-1003,"msg":"Too many requests."}')
        if fault == "auth":
            raise ccxt.AuthenticationError(
                f'binance {{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action. key={self.apiKey}"}}')
        if fault == "insufficient":
            raise ccxt.InsufficientFunds('binance {"code":-2010,"msg":"Account has insufficient balance."}')
        if fault == "invalid":
            raise ccxt.InvalidOrder('binance {"code":-1013,"msg":"Filter failure: LOT_SIZE"}')
        if fault == "nonce":
            raise ccxt.InvalidNonce('binance {"code":-1021,"msg":"Timestamp outside of the recvWindow."}')
        if fault == "unavailable":
            raise ccxt.ExchangeNotAvailable("binance 503 Service Unavailable")
        return fault

    def set_sandbox_mode(self, enabled: bool) -> None:
        self.sandbox = enabled

    async def load_markets(self, reload: bool = False) -> dict[str, Any]:
        self._enter("load_markets")
        return {"ETH/USDT": {"id": "ETHUSDT", "symbol": "ETH/USDT", "base": "ETH", "quote": "USDT"}}

    async def close(self) -> None:
        self.closed = True

    # ------------------------------------------------------------------ orders

    def _place(self, symbol: str, type: str, side: str, amount: float, price: float | None,
               client_id: str | None) -> dict[str, Any]:
        if client_id and client_id in self.by_client:
            raise ccxt.DuplicateOrderId('binance {"code":-2010,"msg":"Duplicate order sent."}')
        self._next_id += 1
        oid = str(self._next_id)
        amt = Decimal(str(amount))
        order: dict[str, Any] = {"id": oid, "clientOrderId": client_id, "symbol": symbol, "type": type,
                                 "side": side, "amount": float(amt), "price": price, "filled": 0.0,
                                 "status": "open", "timestamp": int(time.time() * 1000)}
        marketable = type == "market" or (price is not None and (
            (side == "buy" and Decimal(str(price)) >= self.price) or (side == "sell" and Decimal(str(price)) <= self.price)))
        if marketable:
            self._next_trade += 1
            cost = self.price * amt
            self.trades[oid].append({
                "id": str(self._next_trade), "order": oid, "symbol": symbol, "side": side,
                "amount": float(amt), "price": float(self.price), "cost": float(cost),
                "takerOrMaker": "taker", "timestamp": order["timestamp"],
                "fee": {"cost": float(cost * Decimal("0.001")), "currency": "USDT"},
            })
            order.update(filled=float(amt), status="closed", average=float(self.price))
        self.orders[oid] = order
        if client_id:
            self.by_client[client_id] = oid
        return order

    def _view(self, oid: str) -> dict[str, Any]:
        return {**self.orders[oid], "trades": list(self.trades[oid])}

    async def create_order(self, symbol: str, type: str, side: str, amount: float, price: float | None = None,
                           params: dict[str, Any] | None = None) -> dict[str, Any]:
        params = params or {}
        fault = self._enter("create_order")
        order = self._place(symbol, type, side, amount, price, params.get("clientOrderId"))
        if fault == "timeout_after_place":
            raise ccxt.RequestTimeout("binance POST https://testnet.binance.vision/api/v3/order timed out")
        return self._view(order["id"])

    def _find(self, oid: str | None, params: dict[str, Any]) -> str:
        cid = params.get("clientOrderId") or params.get("origClientOrderId")
        if oid is None and cid is not None:
            oid = self.by_client.get(cid)
        if oid is None or oid not in self.orders:
            raise ccxt.OrderNotFound(f'binance {{"code":-2013,"msg":"Order does not exist."}} {cid or oid}')
        return oid

    async def fetch_order(self, id: str | None, symbol: str | None = None,
                          params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._enter("fetch_order")
        return self._view(self._find(id, params or {}))

    async def fetch_order_trades(self, id: str, symbol: str | None = None, since: Any = None, limit: Any = None,
                                 params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self._enter("fetch_order_trades")
        return list(self.trades[self._find(id, params or {})])

    async def cancel_order(self, id: str | None, symbol: str | None = None,
                           params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._enter("cancel_order")
        oid = self._find(id, params or {})
        if self.orders[oid]["status"] != "open":
            raise ccxt.OrderNotFound('binance {"code":-2011,"msg":"Unknown order sent."}')
        self.orders[oid]["status"] = "canceled"
        return self._view(oid)

    async def fetch_balance(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._enter("fetch_balance")
        return {"free": {"USDT": 10_000.0, "ETH": 0.0}, "used": {}, "total": {"USDT": 10_000.0, "ETH": 0.0}}


class FakeFactory:
    """``exchange_factory`` for the executor; keeps the instance it made for the assertions."""

    def __init__(self, setup: Any = None, **kw: Any) -> None:
        self.kw = kw
        self.setup = setup  # called with the new exchange: state it had before we connected
        self.exchange: FakeExchange | None = None

    def __call__(self, config: dict[str, Any]) -> FakeExchange:
        self.exchange = FakeExchange(config, **self.kw)
        if self.setup is not None:
            self.setup(self.exchange)
        return self.exchange

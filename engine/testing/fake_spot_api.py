"""Binance spot's signed REST endpoints for the fake exchange: an account, orders, fills.

What ccxt's ``binance`` class calls for spot trading, answered the way Binance answers it
(JSON shapes, HTTP statuses and error codes of the spot REST API):

- ``GET /api/v3/account``: balances (``free``/``locked`` as 8-decimal strings);
- ``POST /api/v3/order``: MARKET and LIMIT (GTC/IOC/FOK) orders, ``newClientOrderId``,
  ``newOrderRespType`` ACK/RESULT/FULL (FULL by default, with ``fills``);
- ``GET /api/v3/order`` and ``DELETE /api/v3/order`` by ``orderId`` or ``origClientOrderId``;
- ``GET /api/v3/openOrders``, ``GET /api/v3/myTrades``.

Every one is checked like Binance checks it: the ``X-MBX-APIKEY`` header (missing: 400
-2014; unknown: 401 -2015), ``timestamp`` within ``recvWindow`` of the wall clock (-1021),
and the HMAC-SHA256 ``signature`` of the query string or form body (-1022). Orders pass
the symbol's filters (PRICE_FILTER, LOT_SIZE, NOTIONAL: -1013 "Filter failure: ..."), the
balance (-2010 "Account has insufficient balance for requested action.") and a duplicate
check of the client id (-2010 "Duplicate order sent."); unknown orders answer -2013 (query)
or -2011 (cancel).

Market orders walk the exchange's own book as it stands in the replayed timeline (the book
is not consumed, as on the paper venue); a book thinner than the order fills what it can and
the rest EXPIRES. Limit orders take what is marketable, then rest, and fill at their price
(as maker) when a recorded trade prints through them. The commission (``fee_rate``) is
charged in the asset received: the base asset on a BUY, the quote asset on a SELL (Binance
without BNB discounts).

Scripted faults (:class:`Faults`): every signed request refused with 401 -2015 (``auth``,
the keys are wrong or revoked), or the next few signed requests answered 429 with
``Retry-After`` or 503.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

ZERO = Decimal(0)
#: Binance's own pattern for decimal parameters (quantity, price, ...).
DECIMAL_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
MAX_RECV_WINDOW = 60_000

Book = tuple[dict[str, str], dict[str, str]]  # (bids, asks): price text -> quantity text


def _s(d: Decimal) -> str:
    return f"{d:.8f}"


class ApiError(Exception):
    """An error answer: HTTP status, Binance code and message."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.headers = status, code, msg, headers or {}


@dataclass
class Faults:
    """Scripted trouble on the signed endpoints (tests may change it while the server runs)."""

    auth: bool = False  # every signed request: 401 {"code":-2015,...} (wrong or revoked keys)
    rate_limited: int = 0  # the next N signed requests: 429 with Retry-After
    retry_after_s: int = 1
    unavailable: int = 0  # the next N signed requests: 503


@dataclass
class Order:
    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY / SELL
    type: str  # MARKET / LIMIT
    tif: str  # GTC / IOC / FOK ("" for market)
    price: Decimal  # 0 for market orders
    qty: Decimal
    time_ms: int
    executed: Decimal = ZERO
    quote: Decimal = ZERO  # cummulativeQuoteQty
    status: str = "NEW"
    update_ms: int = 0
    locked: Decimal = ZERO  # funds held for the resting part (quote on a BUY, base on a SELL)

    @property
    def open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def view(self) -> dict[str, Any]:
        """The order as ``GET /api/v3/order`` returns it."""
        return {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1, "clientOrderId": self.client_id,
            "price": _s(self.price), "origQty": _s(self.qty), "executedQty": _s(self.executed),
            "cummulativeQuoteQty": _s(self.quote), "status": self.status, "timeInForce": self.tif or "GTC",
            "type": self.type, "side": self.side, "stopPrice": _s(ZERO), "icebergQty": _s(ZERO),
            "time": self.time_ms, "updateTime": self.update_ms or self.time_ms, "isWorking": True,
            "workingTime": self.time_ms, "origQuoteOrderQty": _s(ZERO), "selfTradePreventionMode": "EXPIRE_MAKER",
        }


@dataclass
class Fill:
    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    maker: bool

    def view(self) -> dict[str, Any]:
        """The trade as ``GET /api/v3/myTrades`` returns it."""
        return {
            "symbol": self.symbol, "id": self.trade_id, "orderId": self.order_id, "orderListId": -1,
            "price": _s(self.price), "qty": _s(self.qty), "quoteQty": _s(self.price * self.qty),
            "commission": _s(self.commission), "commissionAsset": self.commission_asset, "time": self.time_ms,
            "isBuyer": self.side == "BUY", "isMaker": self.maker, "isBestMatch": True,
        }


@dataclass
class Request:
    """One signed-endpoint request as the server saw it (for the tests' counts)."""

    at: float  # monotonic
    method: str
    path: str
    status: int
    code: int = 0  # the Binance error code, 0 when it succeeded


@dataclass
class SpotAccount:
    """One Binance spot account behind the fake exchange's REST port.

    ``book(symbol)`` is the exchange's live book, ``filters(symbol)`` the exchangeInfo
    filters of a tradable symbol (None for an unknown one). ``api_key``/``api_secret``: the
    one key pair the exchange knows (None: it knows none, every signed request is 401).
    """

    book: Callable[[str], Book | None]
    filters: Callable[[str], dict[str, str] | None]
    api_key: str | None = None
    api_secret: str | None = None
    balances: dict[str, Decimal] = field(default_factory=lambda: {"USDT": Decimal("10000"), "ETH": ZERO, "BTC": ZERO})
    fee_rate: Decimal = Decimal("0.001")
    faults: Faults = field(default_factory=Faults)
    orders: dict[int, Order] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    locked: dict[str, Decimal] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(4_000_001))
    _trade_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(90_000_001))

    def __repr__(self) -> str:  # never the key pair
        return f"<SpotAccount orders={len(self.orders)} fills={len(self.fills)}>"

    # ------------------------------------------------------------------ what tests read

    def count(self, method: str | None = None, path: str | None = None, status: int | None = None) -> int:
        return sum(1 for r in self.requests if (method is None or r.method == method)
                   and (path is None or r.path == path) and (status is None or r.status == status))

    def placed(self) -> list[Order]:
        return list(self.orders.values())

    # ------------------------------------------------------------------ HTTP

    ROUTES: ClassVar[frozenset[tuple[str, str]]] = frozenset({("GET", "/api/v3/account"), ("POST", "/api/v3/order"), ("GET", "/api/v3/order"),
              ("DELETE", "/api/v3/order"), ("GET", "/api/v3/openOrders"), ("GET", "/api/v3/myTrades")})

    def handles(self, method: str, path: str) -> bool:
        return (method, path) in self.ROUTES

    async def handle(self, request: web.Request) -> web.Response:
        method, path = request.method, request.path
        try:
            params = await self._authenticate(request)
            body: Any = {
                ("GET", "/api/v3/account"): self._account,
                ("POST", "/api/v3/order"): self._new_order,
                ("GET", "/api/v3/order"): self._query_order,
                ("DELETE", "/api/v3/order"): self._cancel_order,
                ("GET", "/api/v3/openOrders"): self._open_orders,
                ("GET", "/api/v3/myTrades"): self._my_trades,
            }[(method, path)](params)
        except ApiError as e:
            self.requests.append(Request(time.monotonic(), method, path, e.status, e.code))
            return web.Response(body=orjson.dumps({"code": e.code, "msg": e.msg}), status=e.status,
                                content_type="application/json", headers=e.headers)
        self.requests.append(Request(time.monotonic(), method, path, 200))
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _authenticate(self, request: web.Request) -> dict[str, str]:
        """Parameters of a signed request, after Binance's checks (in Binance's order)."""
        f = self.faults
        if f.rate_limited > 0:
            f.rate_limited -= 1
            raise ApiError(429, -1003, "Too many requests; current limit of IP is 6000 requests per minute.",
                           {"Retry-After": str(f.retry_after_s)})
        if f.unavailable > 0:
            f.unavailable -= 1
            raise ApiError(503, -1001, "Internal error; unable to process your request. Please try again.")
        query = request.rel_url.raw_query_string
        form = (await request.text()) if request.method == "POST" else ""
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise ApiError(400, -2014, "API-key format invalid.")
        if f.auth or self.api_key is None or not hmac.compare_digest(key, self.api_key):
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        total = query + form  # Binance signs the query string followed by the body
        payload, sep, signature = total.rpartition("&signature=")
        if not sep or not signature:
            raise ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        params = dict(parse_qsl(payload, keep_blank_values=True))
        if not params.get("timestamp", "").isdigit():
            raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        window = params.get("recvWindow", "5000")
        if not window.isdigit() or int(window) > MAX_RECV_WINDOW:
            raise ApiError(400, -1131, "recvWindow must be less than 60000")
        now = int(time.time() * 1000)
        ts = int(params["timestamp"])
        if ts >= now + 1000 or now - ts > int(window):
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        assert self.api_secret is not None
        want = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, signature):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        return params

    # ------------------------------------------------------------------ helpers

    def _symbol(self, params: dict[str, str]) -> tuple[str, dict[str, str]]:
        sym = params.get("symbol", "")
        if not sym:
            raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        f = self.filters(sym)
        if f is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return sym, f

    @staticmethod
    def _decimal(params: dict[str, str], name: str) -> Decimal | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return None
        if not DECIMAL_RE.match(raw):
            raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                       "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")
        try:
            return Decimal(raw)
        except InvalidOperation:  # pragma: no cover - the pattern rules it out
            raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None

    def _find(self, params: dict[str, str], not_found: ApiError) -> Order:
        sym, _ = self._symbol(params)
        oid, cid = params.get("orderId"), params.get("origClientOrderId")
        if not oid and not cid:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        for o in self.orders.values():
            if o.symbol == sym and ((oid and str(o.order_id) == oid) or (not oid and o.client_id == cid)):
                return o
        raise not_found

    def _free(self, asset: str) -> Decimal:
        return self.balances.get(asset, ZERO)

    def _move(self, asset: str, delta: Decimal) -> None:
        self.balances[asset] = self._free(asset) + delta

    # ------------------------------------------------------------------ endpoints

    def _account(self, params: dict[str, str]) -> dict[str, Any]:
        now = int(time.time() * 1000)
        assets = sorted(set(self.balances) | set(self.locked))
        balances = [{"asset": a, "free": _s(self._free(a)), "locked": _s(self.locked.get(a, ZERO))} for a in assets]
        if params.get("omitZeroBalances") == "true":
            balances = [b for b in balances if Decimal(b["free"]) or Decimal(b["locked"])]
        return {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": _s(self.fee_rate), "taker": _s(self.fee_rate), "buyer": _s(ZERO),
                                "seller": _s(ZERO)},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": now, "accountType": "SPOT",
            "balances": balances, "permissions": ["SPOT"], "uid": 354937868,
        }

    def _new_order(self, params: dict[str, str]) -> dict[str, Any]:
        sym, f = self._symbol(params)
        side, kind = params.get("side", ""), params.get("type", "")
        if not side:
            raise ApiError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        if kind not in ("MARKET", "LIMIT"):
            raise ApiError(400, -1116, "Invalid orderType.")
        qty = self._decimal(params, "quantity")
        price = self._decimal(params, "price")
        tif = params.get("timeInForce", "")
        if params.get("quoteOrderQty"):
            raise ApiError(400, -1128, "Combination of optional parameters invalid.")  # not modelled here
        if qty is None:
            raise ApiError(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        if kind == "LIMIT":
            if price is None:
                raise ApiError(400, -1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
            if not tif:
                raise ApiError(400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or "
                                           "malformed.")
            if tif not in ("GTC", "IOC", "FOK"):
                raise ApiError(400, -1115, "Invalid timeInForce.")
            tick = Decimal(f["tick"])
            if price <= 0 or price % tick != 0:
                raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        elif price is not None or tif:
            raise ApiError(400, -1106, f"Parameter '{'price' if price is not None else 'timeInForce'}' sent when "
                                       "not required.")
        step, min_qty = Decimal(f["step"]), Decimal(f["min_qty"])
        if qty < min_qty or qty % step != 0:
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        cid = params.get("newClientOrderId") or f"x-fake{next(self._ids)}"
        if any(o.client_id == cid and o.open for o in self.orders.values()):
            raise ApiError(400, -2010, "Duplicate order sent.")
        bids, asks = self.book(sym) or ({}, {})
        opposite = asks if side == "BUY" else bids
        levels = sorted(((Decimal(p), Decimal(q)) for p, q in opposite.items()), reverse=side == "SELL")
        if kind == "LIMIT":
            assert price is not None
            levels = [(p, q) for p, q in levels if (p <= price if side == "BUY" else p >= price)]
        taken: list[tuple[Decimal, Decimal]] = []
        left = qty
        for p, q in levels:
            if left <= 0:
                break
            take = min(q, left)
            if take > 0:
                taken.append((p, take))
                left -= take
        ref = price if kind == "LIMIT" else (taken[0][0] if taken else None)
        if ref is None:
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")  # no price: an empty book
        if qty * ref < Decimal(f["min_notional"]):
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")
        if kind == "LIMIT" and tif == "FOK" and left > 0:
            taken, left = [], qty  # expires whole, below
        base, quote = f["base"], f.get("quote", "USDT")
        rests = kind == "LIMIT" and tif == "GTC" and left > 0
        need_quote = sum((p * q for p, q in taken), ZERO) + (left * price if rests and price else ZERO)
        if side == "BUY" and need_quote > self._free(quote):
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
        if side == "SELL" and qty > self._free(base):
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
        now = int(time.time() * 1000)
        o = Order(next(self._ids), cid, sym, side, kind, tif if kind == "LIMIT" else "", price or ZERO, qty, now)
        self.orders[o.order_id] = o
        new_fills = [self._fill(o, p, q, now, maker=False) for p, q in taken]
        if rests:
            o.locked = left * price if side == "BUY" and price else left
            asset = quote if side == "BUY" else base
            self._move(asset, -o.locked)
            self.locked[asset] = self.locked.get(asset, ZERO) + o.locked
            o.status = "PARTIALLY_FILLED" if o.executed else "NEW"
        else:
            o.status = "FILLED" if o.executed == qty else "EXPIRED"
        o.update_ms = now
        resp_type = params.get("newOrderRespType") or "FULL"
        head = {"symbol": sym, "orderId": o.order_id, "orderListId": -1, "clientOrderId": cid, "transactTime": now}
        if resp_type == "ACK":
            return head
        out = {**head, "price": _s(o.price), "origQty": _s(qty), "executedQty": _s(o.executed),
               "origQuoteOrderQty": _s(ZERO), "cummulativeQuoteQty": _s(o.quote), "status": o.status,
               "timeInForce": o.tif or "GTC", "type": kind, "side": side, "workingTime": now,
               "selfTradePreventionMode": "EXPIRE_MAKER"}
        if resp_type == "FULL":
            out["fills"] = [{"price": _s(x.price), "qty": _s(x.qty), "commission": _s(x.commission),
                             "commissionAsset": x.commission_asset, "tradeId": x.trade_id} for x in new_fills]
        return out

    def _fill(self, o: Order, price: Decimal, qty: Decimal, now: int, *, maker: bool) -> Fill:
        f = self.filters(o.symbol) or {}
        base, quote = f.get("base", ""), f.get("quote", "USDT")
        cost = price * qty
        if o.side == "BUY":
            fee = (qty * self.fee_rate).quantize(Decimal("0.00000001"), ROUND_DOWN)
            if maker:  # paid from the funds locked for it
                self.locked[quote] = self.locked.get(quote, ZERO) - cost
                o.locked -= cost
            else:
                self._move(quote, -cost)
            self._move(base, qty - fee)
            asset = base
        else:
            fee = (cost * self.fee_rate).quantize(Decimal("0.00000001"), ROUND_DOWN)
            if maker:
                self.locked[base] = self.locked.get(base, ZERO) - qty
                o.locked -= qty
            else:
                self._move(base, -qty)
            self._move(quote, cost - fee)
            asset = quote
        o.executed += qty
        o.quote += cost
        o.update_ms = now
        fill = Fill(next(self._trade_ids), o.order_id, o.symbol, o.side, price, qty, fee, asset, now, maker)
        self.fills.append(fill)
        return fill

    def _query_order(self, params: dict[str, str]) -> dict[str, Any]:
        return self._find(params, ApiError(400, -2013, "Order does not exist.")).view()

    def _cancel_order(self, params: dict[str, str]) -> dict[str, Any]:
        o = self._find(params, ApiError(400, -2011, "Unknown order sent."))
        if not o.open:
            raise ApiError(400, -2011, "Unknown order sent.")
        self._release(o)
        o.status = "CANCELED"
        o.update_ms = int(time.time() * 1000)
        view = o.view()
        return {"symbol": o.symbol, "origClientOrderId": o.client_id, "orderId": o.order_id, "orderListId": -1,
                "clientOrderId": f"cancel{o.order_id}", "transactTime": o.update_ms,
                **{k: view[k] for k in ("price", "origQty", "executedQty", "cummulativeQuoteQty", "status",
                                        "timeInForce", "type", "side", "selfTradePreventionMode")}}

    def _release(self, o: Order) -> None:
        f = self.filters(o.symbol) or {}
        asset = f.get("quote", "USDT") if o.side == "BUY" else f.get("base", "")
        if o.locked:
            self.locked[asset] = self.locked.get(asset, ZERO) - o.locked
            self._move(asset, o.locked)
            o.locked = ZERO

    def _open_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        sym = params.get("symbol")
        if sym:
            self._symbol(params)
        return [o.view() for o in self.orders.values() if o.open and (not sym or o.symbol == sym)]

    def _my_trades(self, params: dict[str, str]) -> list[dict[str, Any]]:
        sym, _ = self._symbol(params)
        oid = params.get("orderId")
        start, end = params.get("startTime"), params.get("endTime")
        limit = params.get("limit", "500")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'limit'.")
        out = [x for x in self.fills if x.symbol == sym and (not oid or str(x.order_id) == oid)
               and (not start or not start.isdigit() or x.time_ms >= int(start))
               and (not end or not end.isdigit() or x.time_ms <= int(end))]
        return [x.view() for x in out[: int(limit)]]

    # ------------------------------------------------------------------ the market moves

    def on_trade(self, symbol: str, price: Decimal, qty: Decimal) -> None:
        """A recorded trade: resting limit orders it prints through fill at their price, as maker."""
        left = qty
        for o in self.orders.values():
            if left <= 0:
                break
            if not o.open or o.type != "LIMIT" or o.symbol != symbol:
                continue
            if (o.side == "BUY" and price < o.price) or (o.side == "SELL" and price > o.price):
                take = min(o.qty - o.executed, left)
                self._fill(o, o.price, take, int(time.time() * 1000), maker=True)
                left -= take
                if o.executed >= o.qty:
                    o.status = "FILLED"
                    self._release(o)
                else:
                    o.status = "PARTIALLY_FILLED"

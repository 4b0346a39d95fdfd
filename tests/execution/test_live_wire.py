"""``--live`` through the real ``ccxt.async_support`` binance client, against the fake
exchange's Binance spot REST on 127.0.0.1 (signed requests, real JSON and error codes):
orders placed, acknowledged, filled and canceled; refused keys at start halt with one
message and a bounded number of requests; a start that keeps failing stops after
``live.start_attempts``; every ccxt session closed; the canary keys appear nowhere.

No fake ccxt object here: the kernel builds the executor exactly as ``tradedesk --live``
does, with ``live.rest_url`` pointing it at the local server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from engine.core import settings
from engine.core.engine import Engine
from engine.core.events import BookState, CancelOrders, OrderDenied, Side, SubmitOrder
from engine.kernel import Session, live_session
from engine.testing.fake_exchange import FakeExchange, Scenario
from tests.conftest import ETH, ROOT, need_data
from tests.core.test_secrets_canary import CANARY_KEY, CANARY_SECRET, occurrences
from tests.support.config import settings_for
from tests.support.livekit import FAST
from tests.support.scorecard import record

D = Decimal
WAIT_S = 20.0  # an upper bound for conditions that hold within milliseconds; never a sleep


async def until(cond: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not reached in {timeout:g} s: {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def canary_env(monkeypatch):
    """The canary key pair in the environment, where ``tradedesk --live`` reads it."""
    monkeypatch.setenv("TRADEDESK_API_KEY", CANARY_KEY)
    monkeypatch.setenv("TRADEDESK_API_SECRET", CANARY_SECRET)


def wire_settings(tmp_path, fx: FakeExchange, *extra: str) -> settings.Settings:
    return settings_for(tmp_path / "data", "models.enabled=[]", *FAST, 'symbols.reference=""',
                        "exchange.backfill=false", f'exchange.ws_url="{fx.ws_url}"',
                        f'exchange.rest_url="{fx.rest_url}"', f'live.rest_url="{fx.rest_url}"', *extra)


async def run_session(session: Session, body: Callable[[Engine], Awaitable[None]]) -> None:
    """The live driver with ``body`` beside it; then what the CLI does at exit."""
    engine, driver = session.engine, session.live
    task = asyncio.create_task(driver.run())
    try:
        await body(engine)
    finally:
        driver.stop("test done")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await engine.executor.close()  # as tui/cli.py does: the ccxt session belongs to this loop
        engine.shutdown()


def book_live(engine: Engine) -> bool:
    st = engine.symbols.get("ETHUSDT")
    return st is not None and st.book.state is BookState.LIVE


def ledger_text(engine: Engine) -> str:
    return "\n".join(str(v) for t in ("orders", "fills", "denials", "trading_states")
                     for row in engine.ledger.query(f"SELECT * FROM {t}") for v in row)


def all_text(engine: Engine, caplog, ledger: str) -> str:
    return "\n".join([caplog.text, *(line.text for line in engine.log), repr(engine.snapshot()),
                      repr(engine.executor), ledger])


def no_unclosed_sessions(caplog) -> bool:
    gc.collect()  # an aiohttp session that was never closed says so when it is collected
    return "Unclosed client session" not in caplog.text and "Unclosed connector" not in caplog.text


async def test_live_orders_go_through_the_real_ccxt_client(tmp_path, canary_env, caplog):
    need_data(*ETH)
    caplog.set_level(logging.INFO)
    async with FakeExchange(ETH[:1], Scenario(speed=1.0, window_s=120), api_key=CANARY_KEY,
                            api_secret=CANARY_SECRET) as fx:
        session = live_session(wire_settings(tmp_path, fx), live_orders=True, confirmed=True, models=False,
                               max_seconds=60)
        engine = session.engine
        acct = fx.account
        denied: list[OrderDenied] = []
        engine.bus.on(OrderDenied, denied.append)

        async def trade(engine: Engine) -> None:
            await until(lambda: book_live(engine), "the ETH book LIVE")
            # 1. a market BUY: placed (signed POST), acknowledged with its fills, applied
            engine.send(SubmitOrder("ETHUSDT", Side.BUY, D("0.05"), "manual"))
            await until(lambda: engine.fills and not engine.orders.open, "the market BUY filled")
            # 2. a limit BUY far below the market rests, then is canceled (DELETE, then a query)
            engine.send(SubmitOrder("ETHUSDT", Side.BUY, D("0.01"), "manual", limit_price=D("1000.00")))
            await until(lambda: any(o.state.value == "OPEN" for o in engine.orders.open.values()), "the limit resting")
            engine.send(CancelOrders("ETHUSDT"))
            await until(lambda: not engine.orders.open, "the limit canceled")
            # 3. not enough USDT at the exchange: refused with Binance's -2010, classified by ccxt
            acct.balances["USDT"] = D("20")
            engine.send(SubmitOrder("ETHUSDT", Side.BUY, D("0.05"), "manual"))
            await until(lambda: len(denied) == 1, "the insufficient-balance rejection")
            # 4. the key is revoked: the next order's -2015 (ccxt: DDoSProtection, after a first
            #    success) halts live trading; the order after it never reaches the exchange
            acct.faults.auth = True
            engine.send(SubmitOrder("ETHUSDT", Side.BUY, D("0.01"), "manual"))
            await until(lambda: engine.trading_state == "HALTED", "HALTED on the revoked key")
            posts = acct.count("POST", "/api/v3/order")
            engine.send(SubmitOrder("ETHUSDT", Side.BUY, D("0.01"), "manual"))
            assert acct.count("POST", "/api/v3/order") == posts
            seen["orders"] = engine.ledger.query("SELECT client_id, state, exchange_id FROM orders ORDER BY seq")
            seen["ledger"] = ledger_text(engine)

        seen: dict[str, object] = {}
        await run_session(session, trade)

        # the exchange's side of it: two orders placed and signed correctly, one fill
        placed = acct.placed()
        assert [(o.type, o.side, o.status) for o in placed] == [("MARKET", "BUY", "FILLED"), ("LIMIT", "BUY", "CANCELED")]
        orders = seen["orders"]
        assert [(cid, st, xid) for cid, st, xid in orders if st != "REJECTED"] == [
            (o.client_id, o.status, str(o.order_id)) for o in placed]  # by our client ids, with their ids
        assert [st for _, st, _ in orders] == ["FILLED", "CANCELED", "REJECTED", "REJECTED"]
        assert acct.count(status=200) >= 5  # account, 2 orders, the cancel, queries: all signatures verified
        assert not [r for r in acct.requests if r.code in (-1022, -1021, -1102, -1100, -1013)]
        assert [r.code for r in acct.requests if r.path == "/api/v3/order" and r.method == "POST"] == [0, 0, -2010, -2015]
        [xf] = acct.fills
        # the desk's side: the fill applied once with the exchange's price, id and commission
        [f] = engine.fills
        assert (f.fill_id, f.qty, f.price, f.side) == (f"binance:{xf.trade_id}", xf.qty, xf.price, Side.BUY)
        assert xf.commission_asset == "ETH" and f.fee == xf.commission * xf.price  # paid in ETH, valued in USDT
        pos = engine.portfolio.positions["ETHUSDT"]
        assert (pos.side, pos.qty, pos.entry_price) == (Side.BUY, D("0.05"), xf.price)
        assert engine.executor.balances["ETH"] == D("0.05") - xf.commission  # read back from /api/v3/account
        assert "InsufficientFunds" in denied[0].reason and "insufficient balance" in denied[0].reason
        assert "AuthenticationError" in engine.risk.reason or "credentials" in engine.risk.reason
        assert "TRADEDESK_API_KEY" in engine.risk.reason
        text = all_text(engine, caplog, str(seen["ledger"]))
        assert occurrences(text.encode()) == 0
        assert no_unclosed_sessions(caplog)
        await until(lambda: fx.open_connections() == 0, "every client connection closed")
    record("orders", {"live orders placed through the real path": "all" if len(placed) == 2 else len(placed)})


async def halted_and_running(engine: Engine, what: str) -> None:
    """Wait for the HALT, then keep the desk running a while: housekeeping (which used to
    restart the executor every second) must not retry, and orders reach nothing."""
    await until(lambda: engine.trading_state == "HALTED", what)
    for _ in range(50):
        engine.housekeeping()
        await asyncio.sleep(0)


async def test_refused_keys_at_start_halt_once_with_bounded_requests(tmp_path, canary_env, caplog):
    need_data(*ETH)
    caplog.set_level(logging.INFO)
    async with FakeExchange(ETH[:1], Scenario(speed=1.0, window_s=120, auth_fail=True), api_key=CANARY_KEY,
                            api_secret=CANARY_SECRET) as fx:
        session = live_session(wire_settings(tmp_path, fx), live_orders=True, confirmed=True, models=False,
                               max_seconds=60)
        acct = fx.account
        executor = session.engine.executor

        async def wait_for_halt(engine: Engine) -> None:
            await halted_and_running(engine, "HALTED on the refused keys")
            seen["messages"] = [r.getMessage() for r in caplog.records if "API credentials" in r.getMessage()]
            seen["desk"] = [line.text for line in engine.log if "API credentials" in line.text]
            engine.send(SubmitOrder("ETHUSDT", Side.BUY, D("0.05"), "manual"))  # denied: HALTED
            await until(lambda: all(t.done() for t in executor._tasks), "the executor's tasks finished")
            assert engine.orders.open == {}
            seen["ledger"] = ledger_text(engine)

        seen: dict[str, Any] = {}
        await run_session(session, wait_for_halt)
        engine = session.engine
        signed = acct.count()
        assert signed == 1  # the balance read that proves the keys: refused, never retried
        assert acct.requests[0].status == 401 and acct.requests[0].code == -2015
        assert executor.start_attempts_made == 1
        reason = engine.risk.reason
        assert "refused the API credentials" in reason and "TRADEDESK_API_KEY" in reason
        assert '"code":-2015' in reason  # Binance's own answer, quoted
        # one message until anyone tries to trade: one log record, one line in the desk's log
        assert len(seen["messages"]) == 1, seen["messages"]
        assert seen["messages"][0].startswith("trading HALTED: the exchange refused the API credentials at start")
        assert len(seen["desk"]) == 1, seen["desk"]
        assert engine.orders.last_denial.startswith("trading HALTED")
        assert occurrences(all_text(engine, caplog, seen["ledger"]).encode()) == 0
        assert no_unclosed_sessions(caplog)
        await until(lambda: fx.open_connections() == 0, "every client connection closed")
    record("orders", {"auth error at start: signed requests": signed, "start attempts": executor.start_attempts_made})


async def test_a_start_that_keeps_failing_stops_after_the_configured_attempts(tmp_path, canary_env, caplog):
    need_data(*ETH)
    caplog.set_level(logging.INFO)
    async with FakeExchange(ETH[:1], Scenario(speed=1.0, window_s=120), api_key=CANARY_KEY,
                            api_secret=CANARY_SECRET) as fx:
        fx.account.faults.unavailable = 1000  # every signed request: 503
        session = live_session(wire_settings(tmp_path, fx, "live.start_attempts=3"), live_orders=True,
                               confirmed=True, models=False, max_seconds=60)
        executor = session.engine.executor

        async def wait_for_halt(engine: Engine) -> None:
            await halted_and_running(engine, "HALTED once the attempts are spent")

        await run_session(session, wait_for_halt)
        engine = session.engine
        assert fx.account.count() == 3
        assert [r.status for r in fx.account.requests] == [503, 503, 503]
        assert executor.start_attempts_made == 3
        assert engine.risk.reason.startswith("could not start the live executor in 3 attempts")
        assert '"code":-1001' in engine.risk.reason  # the exchange's last answer, quoted
        assert no_unclosed_sessions(caplog)


@pytest.mark.parametrize("value", ['"ftp://127.0.0.1:1"', '"127.0.0.1:8080"', '"http://h:99999"', '"http://h/?x=1"',
                                   "8080"])
def test_a_bad_live_rest_url_is_refused_by_name(value):
    with pytest.raises(settings.SettingsError, match=r"live\.rest_url"):
        settings.load(search=False, overrides=[f"live.rest_url={value}"])


def test_a_live_rest_url_with_credentials_is_refused_without_echoing_them(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    r = subprocess.run([sys.executable, "-m", "tui.cli", "--headless", "--set",
                        f'live.rest_url="http://{CANARY_KEY}:x@127.0.0.1:1"'], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "live.rest_url must not carry credentials" in r.stderr
    assert CANARY_KEY not in r.stderr + r.stdout

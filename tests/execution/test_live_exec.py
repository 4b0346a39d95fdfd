"""The live path against the fake ccxt: unknown outcomes resolved by client order id and
never resent, Retry-After honoured, auth errors halt without showing a secret, the typed
confirmation, and reconciliation of unknown orders at restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from engine.core.events import OrderDenied, ResumeTrading, Side, SubmitOrder
from engine.execution.executor import OrderRequest, OrderType
from engine.execution.ledger import Ledger
from engine.kernel import build_engine, live_executor
from tests.conftest import ROOT
from tests.support.fake_ccxt import FakeFactory
from tests.support.scorecard import record
from tests.support.scripted_market import D, make_engine

BIDS = [("1999.50", "5"), ("1999.00", "10")]
ASKS = [("2000.00", "5"), ("2000.50", "10")]
KEY = "livetest-key-7f3a9c2e"
SECRET = "livetest-secret-b41d0e88"


async def until(cond, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def live_setup(cfg, tmp_path, *overrides, resolve_delay_s=0.01, attempts=3, setup=None, **fake_kw):
    factory = FakeFactory(setup=setup, **fake_kw)
    cfg = cfg.with_overrides([f"live.resolve_attempts={attempts}", f"live.resolve_delay_ms={round(resolve_delay_s * 1000)}"])
    ex = live_executor(cfg, env={"TRADEDESK_API_KEY": KEY, "TRADEDESK_API_SECRET": SECRET}, exchange_factory=factory)
    led = Ledger(tmp_path / "ledger" / "live.db", "live")
    engine, mkt = make_engine(cfg, *overrides, ledger=led, executor=ex, mode="live")
    mkt.start(BIDS, ASKS)
    return engine, mkt, ex, factory


def order(engine, side=Side.BUY, qty="0.1", **kw):
    engine.submit(SubmitOrder("ETHUSDT", side, D(qty), **kw))
    engine.run_commands()


def creates(fake) -> int:
    return sum(1 for _, m in fake.calls if m == "create_order")


async def test_orders_need_the_typed_confirmation_and_use_the_sandbox(cfg, tmp_path):
    engine, _mkt, ex, factory = live_setup(cfg, tmp_path)
    assert engine.live_confirmation_required
    assert engine.live_confirmation_phrase == "LIVE BINANCE TESTNET"
    assert engine.snapshot().mode == "LIVE TESTNET"
    assert engine.snapshot().live_confirmation == "LIVE BINANCE TESTNET"
    denied: list[OrderDenied] = []
    engine.bus.on(OrderDenied, denied.append)
    order(engine)
    assert denied[-1].code == "not_confirmed"
    assert "not confirmed" in engine.snapshot().banner
    assert not engine.confirm_live("yes")
    assert engine.live_confirmation_required
    assert engine.confirm_live("LIVE BINANCE TESTNET")
    assert not engine.live_confirmation_required
    await ex.start()
    assert factory.exchange.sandbox is True
    order(engine)
    await until(lambda: engine.fills)
    f = engine.fills[0]
    assert f.fill_id.startswith("binance:")
    assert f.price == D("2000.00")
    assert f.fee == D("0.2")
    row = engine.ledger.order(f.order_id)
    assert row["state"] == "FILLED"
    assert row["exchange_id"] == factory.exchange.by_client[f.order_id]
    assert engine.portfolio.positions["ETHUSDT"].qty == D("0.1")
    await ex.close()


async def test_timeout_after_placement_resolves_to_exactly_one_order(cfg, tmp_path):
    engine, _mkt, ex, factory = live_setup(cfg, tmp_path, resolve_delay_s=0.2)
    engine.confirm_live(engine.live_confirmation_phrase)
    await ex.start()
    fake = factory.exchange
    fake.fail("create_order", "timeout_after_place")
    order(engine)
    cid = engine.ledger.query("SELECT client_id FROM orders")[0][0]
    await until(lambda: engine.ledger.order(cid)["state"] == "UNKNOWN")
    denied: list[OrderDenied] = []
    engine.bus.on(OrderDenied, denied.append)
    order(engine)  # while the outcome is unknown, nothing new goes out
    assert denied[-1].code == "reconciling"
    await until(lambda: engine.ledger.order(cid)["state"] == "FILLED")
    assert fake.placed() == 1
    assert creates(fake) == 1
    assert any(m == "fetch_order" for _, m in fake.calls)
    assert len(engine.fills) == 1
    assert engine.portfolio.positions["ETHUSDT"].qty == D("0.1")
    assert engine.ledger.order(cid)["outcome"] == "confirmed"
    order(engine)  # resolved: trading goes on
    await until(lambda: len(engine.fills) == 2)
    record("orders", {"timeout after placement: exchange orders": fake.placed() - 1})
    await ex.close()


async def test_timeout_without_placement_resolves_to_zero_orders(cfg, tmp_path):
    engine, _mkt, ex, factory = live_setup(cfg, tmp_path, attempts=3)
    engine.confirm_live(engine.live_confirmation_phrase)
    await ex.start()
    fake = factory.exchange
    fake.fail("create_order", "timeout")
    order(engine)
    cid = engine.ledger.query("SELECT client_id FROM orders")[0][0]
    await until(lambda: engine.ledger.order(cid)["state"] == "REJECTED")
    assert fake.placed() == 0
    assert creates(fake) == 1
    assert sum(1 for _, m in fake.calls if m == "fetch_order") == 3
    row = engine.ledger.order(cid)
    assert row["outcome"] == "rejected"
    assert "never placed" in row["detail"]
    assert "not resent" in row["detail"]
    assert not engine.fills
    assert not engine.orders.reconciling
    record("orders", {"timeout without placement: exchange orders": fake.placed(),
                      "duplicate orders": creates(fake) - 1, "unknown resolved": "all"})
    await ex.close()


async def test_rate_limit_honours_retry_after(cfg, tmp_path):
    engine, _mkt, ex, factory = live_setup(cfg, tmp_path, retry_after=0.4)
    engine.confirm_live(engine.live_confirmation_phrase)
    await ex.start()
    fake = factory.exchange
    fake.fail("create_order", "rate_limit")
    order(engine)
    await until(lambda: engine.orders.errors == 1)
    assert "rate limited" in engine.orders.last_denial
    window_ends = fake.rate_limited_at[-1][0] + fake.retry_after
    order(engine)
    refused = "retry after" in engine.orders.last_denial
    if time.monotonic() < window_ends - 0.005:  # still inside the Retry-After window after the order,
        assert refused  # so it was inside when the order came: refused without a request
    if refused:
        assert creates(fake) == 1
    # (on a box so loaded that the window had passed first, it was sent: the checks below
    # count from what is there, so either way they hold)
    await until(lambda: creates(fake) == (1 if refused else 2) and len(engine.fills) == (0 if refused else 1))
    await asyncio.sleep(max(0.0, window_ends - time.monotonic()) + 0.05)  # the window is over
    sent, filled = creates(fake), len(engine.fills)
    order(engine)
    await until(lambda: len(engine.fills) == filled + 1)
    assert creates(fake) == sent + 1
    # a rate limit while resolving an unknown order also waits its Retry-After
    fake.fail("create_order", "timeout_after_place")
    fake.fail("fetch_order", "rate_limit")
    order(engine)
    await until(lambda: len(engine.fills) == filled + 2)
    during = fake.requests_during_retry_after()
    assert during == 0
    assert fake.placed() == filled + 2
    record("orders", {"requests during Retry-After": during})
    await ex.close()


async def test_exchange_rejections_are_denials_with_reasons(cfg, tmp_path):
    engine, _mkt, ex, factory = live_setup(cfg, tmp_path)
    engine.confirm_live(engine.live_confirmation_phrase)
    await ex.start()
    denied: list[OrderDenied] = []
    engine.bus.on(OrderDenied, denied.append)
    factory.exchange.fail("create_order", "insufficient", "invalid")
    order(engine)
    order(engine)
    await until(lambda: len(denied) == 2)
    assert all(d.code == "rejected" for d in denied)
    assert "InsufficientFunds" in denied[0].reason
    assert "insufficient balance" in denied[0].reason
    assert "InvalidOrder" in denied[1].reason
    assert engine.trading_state == "ACTIVE"
    assert not engine.fills
    await ex.close()


async def test_auth_error_halts_live_trading_without_showing_the_secret(cfg, tmp_path, caplog):
    engine, _mkt, ex, factory = live_setup(cfg, tmp_path)
    engine.confirm_live(engine.live_confirmation_phrase)
    await ex.start()
    factory.exchange.fail("create_order", "auth")  # its message echoes the key
    order(engine)
    await until(lambda: engine.trading_state == "HALTED")
    reason = engine.risk.reason
    assert "TRADEDESK_API_KEY" in reason
    assert "AuthenticationError" in reason
    texts = [reason, engine.orders.last_denial, *(line.text for line in engine.log), repr(engine.snapshot()),
             caplog.text, repr(ex), repr(ex._credentials)]
    texts += [str(v) for row in engine.ledger.query("SELECT * FROM orders") for v in row]
    texts += [str(v) for row in engine.ledger.query("SELECT * FROM denials") for v in row]
    texts += [str(v) for row in engine.ledger.query("SELECT * FROM trading_states") for v in row]
    for t in texts:
        assert KEY not in t
        assert SECRET not in t
    assert any("***" in t for t in texts)  # the echoed key was there, masked
    order(engine)
    assert engine.orders.last_denial.startswith("trading HALTED")
    engine.submit(ResumeTrading())
    engine.run_commands()
    order(engine)  # the executor itself stays halted: nothing more reaches the exchange
    await until(lambda: "halted" in engine.orders.last_denial)
    assert creates(factory.exchange) == 1
    await ex.close()


async def test_restart_resolves_unknown_orders_by_client_id(cfg, tmp_path):
    path = tmp_path / "ledger" / "live.db"
    with Ledger(path, "live") as led:  # the last run died after these intents were committed
        reached = OrderRequest(f"td-{led.nonce}-1", "ETHUSDT", Side.BUY, D("0.1"), OrderType.MARKET, ts=1)
        lost = OrderRequest(f"td-{led.nonce}-2", "ETHUSDT", Side.BUY, D("0.2"), OrderType.MARKET, ts=2)
        led.record_intent(reached, 1)
        led.record_intent(lost, 2)

    def exchange_state(fake):  # the first one had reached the exchange and filled
        fake._place("ETH/USDT", "market", "buy", 0.1, None, reached.client_id)

    engine, _mkt, ex, factory = live_setup(cfg, tmp_path, attempts=2, setup=exchange_state)
    engine.confirm_live(engine.live_confirmation_phrase)
    assert engine.orders.reconciling == {reached.client_id, lost.client_id}
    order(engine)
    assert engine.orders.last_denial.startswith("2 order(s) with unknown outcome")
    await ex.start()
    await until(lambda: not engine.orders.reconciling)
    assert engine.ledger.order(reached.client_id)["state"] == "FILLED"
    assert engine.ledger.order(lost.client_id)["state"] == "REJECTED"
    assert engine.portfolio.positions["ETHUSDT"].qty == D("0.1")
    assert creates(factory.exchange) == 0
    assert factory.exchange.placed() == 1
    order(engine)
    await until(lambda: len(engine.fills) == 2)
    await ex.close()


def test_cli_live_needs_keys_and_the_typed_confirmation(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    args = [sys.executable, "-m", "tui.cli", "--live", "--headless", "--set", f'general.data_dir="{tmp_path}"']
    r = subprocess.run(args, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                       timeout=60, input="")
    assert r.returncode == 2
    assert "TRADEDESK_API_KEY and TRADEDESK_API_SECRET" in r.stderr
    env = {**env, "PYTHONPATH": str(ROOT), "TRADEDESK_API_KEY": KEY, "TRADEDESK_API_SECRET": SECRET}
    r = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, input="yes\n")
    assert r.returncode == 2
    assert "LIVE BINANCE TESTNET" in r.stderr
    assert "not confirmed" in r.stderr
    assert KEY not in r.stderr + r.stdout
    assert SECRET not in r.stderr + r.stdout


@pytest.mark.parametrize("fault", ["nonce", "unavailable"])
async def test_other_exchange_errors_are_classified(cfg, tmp_path, fault):
    engine, _mkt, ex, factory = live_setup(cfg, tmp_path)
    engine.confirm_live(engine.live_confirmation_phrase)
    await ex.start()
    factory.exchange.fail("create_order", fault)
    order(engine)
    cid = engine.ledger.query("SELECT client_id FROM orders")[0][0]
    await until(lambda: engine.ledger.order(cid)["state"] in ("REJECTED", "FILLED"))
    # InvalidNonce is a NetworkError in ccxt: unknown, then resolved (not found ⇒ never placed);
    # a 503 likewise may or may not have placed the order.
    assert engine.ledger.order(cid)["state"] == "REJECTED"
    assert factory.exchange.placed() == 0
    assert creates(factory.exchange) == 1
    assert Decimal(engine.ledger.order(cid)["filled_qty"]) == 0
    await ex.close()


async def test_automatic_trading_is_on_for_paper_and_off_for_live_orders(cfg, tmp_path):
    """SPEC §4: auto on by default for paper (live data too), off for real orders until switched on."""
    from engine.core.clock import WallClock

    paper = build_engine(cfg, mode="live", clock=WallClock())
    assert paper.auto_trade is True and paper.mode_label() == "PAPER"
    engine, _, _, _ = live_setup(cfg, tmp_path)
    assert engine.auto_trade is False
    assert engine.mode_label().startswith("LIVE")
    await engine.executor.close()

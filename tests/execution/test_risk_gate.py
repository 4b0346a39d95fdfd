"""The risk gate on hostile orders and conditions: every one denied or halted with its
reason, and no order over a limit ever reaches the venue."""

from __future__ import annotations

from decimal import Decimal

from engine.core.events import (
    NS_PER_S,
    OrderDenied,
    ResumeTrading,
    Side,
    SubmitOrder,
    TradingStateChanged,
)
from tests.support.scorecard import record
from tests.support.scripted_market import D, make_engine

BIDS = [("1999.50", "5"), ("1999.00", "10")]
ASKS = [("2000.00", "5"), ("2000.50", "10")]


def order(engine, side, qty, source="manual", **kw):
    engine.submit(SubmitOrder("ETHUSDT", side, D(qty), source, **kw))
    engine.run_commands()


def over_limit_orders(engine) -> int:
    """Orders in the ledger (= handed to the venue) that break a limit."""
    lim = engine.risk.limits
    bad = 0
    for qty, ref, side in engine.ledger.query("SELECT qty, ref_price, side FROM orders"):
        q, p = Decimal(qty), Decimal(ref)
        if q > Decimal("9000") or (side == "BUY" and q * p > lim.max_order_notional):
            bad += 1
    return bad


def test_hostile_orders_are_denied_with_reasons(cfg):
    engine, mkt = make_engine(cfg, "risk.max_orders_per_min=20")
    mkt.start(BIDS, ASKS)
    denied: list[OrderDenied] = []
    engine.bus.on(OrderDenied, denied.append)

    order(engine, Side.BUY, "1e9", "auto")  # a model asks for a billion units
    assert denied[-1].code == "above_max_qty"
    assert denied[-1].source == "auto"
    order(engine, Side.BUY, "0.6")  # 0.6 x 2000 = 1200 > max_order_notional 1000
    assert denied[-1].code == "over_notional"
    assert "max_order_notional" in denied[-1].reason
    order(engine, Side.BUY, "NaN")
    assert denied[-1].code == "bad_qty"
    order(engine, Side.BUY, "-1")
    assert denied[-1].code == "bad_qty"
    order(engine, Side.BUY, "0.1", limit_price=D("Infinity"))
    assert denied[-1].code == "bad_price"
    order(engine, Side.BUY, "0.1", limit_price=D("1999.995"))
    assert denied[-1].code == "bad_tick"
    assert engine.orders_sent == 0

    # a burst: 50 small orders at once, 20 per minute allowed
    for _ in range(50):
        engine.submit(SubmitOrder("ETHUSDT", Side.BUY, D("0.01"), "auto"))
    engine.run_commands()
    assert engine.orders_sent == 20
    assert sum(1 for d in denied if d.code == "rate_limit") == 30
    assert "max_orders_per_min" in denied[-1].reason
    mkt.idle(61_000)  # a minute later the window has room again
    order(engine, Side.BUY, "0.01")
    assert engine.orders_sent == 21

    # max position: 1.4 ETH held; 0.2 more would pass the order cap but not the 3000 position cap
    for _ in range(3):
        order(engine, Side.BUY, "0.4")
    assert engine.portfolio.positions["ETHUSDT"].qty == D("1.41")
    order(engine, Side.BUY, "0.2")
    assert denied[-1].code == "over_position"
    assert "max_position_notional" in denied[-1].reason
    order(engine, Side.SELL, "1.41")  # reducing is always allowed
    assert not engine.portfolio.positions

    # every denial is journaled and shown in the signal log
    n_denied = engine.ledger.query("SELECT count(*) FROM denials")[0][0]
    assert n_denied == len(denied) == engine.denials
    assert sum("denied" in line.text for line in engine.log) >= min(len(denied), 100)
    sent_over = over_limit_orders(engine)
    assert sent_over == 0
    record("risk", {"hostile orders denied": len(denied), "orders over limits sent": sent_over,
                    "denial codes": ",".join(sorted(engine.risk.denied))})


def test_drawdown_past_max_daily_loss_switches_to_reducing(cfg):
    engine, mkt = make_engine(cfg, "risk.max_order_notional=5000", "risk.max_daily_loss=100")
    mkt.start(BIDS, ASKS)
    states: list[TradingStateChanged] = []
    engine.bus.on(TradingStateChanged, states.append)
    order(engine, Side.BUY, "1")
    assert engine.trading_state == "ACTIVE"
    # the market falls 150 within the day; bars close once a second and the gate looks
    mkt.set_book([("1849.50", "5")], [("1850.00", "5")])
    t_drop = mkt.now
    for _ in range(3):
        mkt.trade("1850.00", "0.1", ms=600)
    assert engine.trading_state == "REDUCING"
    halt_latency_s = (states[0].ts - t_drop) / NS_PER_S
    assert halt_latency_s <= 2.0
    assert "daily loss" in states[0].reason
    assert "max_daily_loss" in states[0].reason
    denied: list[OrderDenied] = []
    engine.bus.on(OrderDenied, denied.append)
    order(engine, Side.BUY, "0.1")
    assert denied[-1].code == "reducing"
    order(engine, Side.SELL, "1")  # closing is what REDUCING is for
    assert not engine.portfolio.positions
    assert "REDUCING" in engine.snapshot().banner
    # the next UTC day starts clean
    mkt.idle(86_400_000)
    mkt.trade("1850.00", "0.1", ms=1500)
    mkt.trade("1850.00", "0.1", ms=1500)
    assert engine.trading_state == "ACTIVE"
    record("risk", {"daily loss halt latency s": round(halt_latency_s, 3)})


def test_stale_data_denies_and_reduces(cfg):
    engine, mkt = make_engine(cfg, "risk.max_data_age_s=5")
    mkt.start(BIDS, ASKS)
    denied: list[OrderDenied] = []
    engine.bus.on(OrderDenied, denied.append)
    mkt.clock.advance(mkt.now + 6 * NS_PER_S)  # no market data for 6 s
    order(engine, Side.BUY, "0.1")
    assert denied[-1].code == "stale_data"
    assert "old" in denied[-1].reason
    mkt.now += 6 * NS_PER_S
    mkt.idle(1)
    order(engine, Side.BUY, "0.1")
    assert engine.orders_sent == 1
    # the feed marks the book STALE (silence, no pong): entries denied, REDUCING until LIVE
    engine.symbols["ETHUSDT"].book.mark_stale("no message for 10 s")
    assert engine.trading_state == "REDUCING"
    assert "stale" in engine.risk.reason
    order(engine, Side.BUY, "0.1")
    assert denied[-1].code == "book_not_live"
    mkt.idle(1)  # the next diff in sequence: LIVE again
    assert engine.trading_state == "ACTIVE"
    assert engine.orders_sent == 1


def test_repeated_errors_halt_until_resumed(cfg):
    engine, mkt = make_engine(cfg, "paper.latency_ms=10", "risk.max_consecutive_errors=3")
    mkt.start(BIDS, ASKS)
    for _ in range(3):
        order(engine, Side.BUY, "0.1")
        mkt.set_book(BIDS, [])  # the asks vanish before the order arrives: the venue rejects it
        mkt.idle(20)
        mkt.set_book(BIDS, ASKS)
    assert engine.orders.errors == 3
    assert not engine.fills
    assert engine.trading_state == "HALTED"
    assert "3 order errors in a row" in engine.risk.reason
    assert engine.auto_trade is False
    rejected = engine.ledger.query("SELECT count(*) FROM orders WHERE state = 'REJECTED'")[0][0]
    assert rejected == 3
    order(engine, Side.BUY, "0.1")
    assert engine.orders.last_denial.startswith("trading HALTED")
    engine.submit(ResumeTrading())
    engine.run_commands()
    assert engine.trading_state == "ACTIVE"

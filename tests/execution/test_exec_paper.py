"""Paper execution on constructed books: VWAP across levels with fees, minimums and
precision, partial fills, the latency model, resting limit orders, cancel, close, panic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.core.events import (
    CancelOrders,
    ClosePosition,
    ManualOrder,
    OrderDenied,
    OrderFilled,
    Panic,
    PositionClosed,
    ResumeTrading,
    Side,
    SubmitOrder,
)
from tests.support.scripted_market import D, make_engine

ASKS = [("2000.00", "0.5"), ("2000.50", "1.0"), ("2001.00", "2.0")]
BIDS = [("1999.50", "0.5"), ("1999.00", "1.0"), ("1998.00", "2.0")]
WIDE = ("risk.max_order_notional=10000", "risk.max_position_notional=20000")


def order(engine, side, qty, **kw):
    engine.submit(SubmitOrder("ETHUSDT", side, D(qty), **kw))
    engine.run_commands()


def collect(engine, kind):
    out: list = []
    engine.bus.on(kind, out.append)
    return out


def test_market_order_walks_levels_at_vwap_with_fees(cfg):
    engine, mkt = make_engine(cfg, *WIDE)
    mkt.start(BIDS, ASKS)
    fills = collect(engine, OrderFilled)
    order(engine, Side.BUY, "1.2")
    assert [(f.price, f.qty) for f in fills] == [(D("2000.00"), D("0.5")), (D("2000.50"), D("0.7"))]
    notional = D("2000.00") * D("0.5") + D("2000.50") * D("0.7")
    fee = notional * D("0.001")
    assert sum(f.fee for f in fills) == fee == D("2.40035")
    assert all(f.liquidity == "taker" for f in fills)
    assert fills[1].slippage_bps == pytest.approx(2.5)  # 0.50 over a 2000.00 touch
    pos = engine.portfolio.positions["ETHUSDT"]
    assert pos.qty == D("1.2")
    assert pos.entry_price == notional / D("1.2")
    assert engine.balance() == D("10000") - notional - fee
    line = engine.log[-1].text
    assert "over 2 levels" in line
    assert "slippage" in line
    assert "fee 2.4004" in line
    row = engine.ledger.order(fills[0].order_id)
    assert row["state"] == "FILLED"
    assert row["outcome"] == "confirmed"
    assert Decimal(row["filled_qty"]) == D("1.2")
    # selling it back walks the bids the same way; realised PnL is exact
    order(engine, Side.SELL, "1.2")
    exit_notional = D("1999.50") * D("0.5") + D("1999.00") * D("0.7")
    (closed,) = engine.portfolio.closed
    assert closed.realised_pnl == exit_notional - notional - fee - exit_notional * D("0.001")
    assert engine.balance() == D("10000") + closed.realised_pnl


def test_below_exchange_minimums_is_denied_and_nothing_is_sent(cfg):
    engine, mkt = make_engine(cfg)
    mkt.start(BIDS, ASKS)
    denied = collect(engine, OrderDenied)
    order(engine, Side.BUY, "0.00004")  # below the 0.0001 step: rounds to nothing
    order(engine, Side.BUY, "0.002")  # 0.002 x 2000 = 4 USDT < 5 USDT minimum notional
    assert [d.code for d in denied] == ["below_min_qty", "below_min_notional"]
    assert "minimum" in denied[0].reason
    assert "notional" in denied[1].reason
    assert engine.orders_sent == 0
    assert engine.executor.orders_received == 0
    assert not engine.fills
    assert engine.ledger.query("SELECT count(*) FROM orders")[0][0] == 0
    assert engine.ledger.query("SELECT count(*) FROM denials")[0][0] == 2
    assert any("denied" in line.text for line in engine.log)


def test_quantity_is_rounded_down_to_the_step_size(cfg):
    engine, mkt = make_engine(cfg)
    mkt.start(BIDS, ASKS)
    order(engine, Side.BUY, "0.12345")
    assert engine.fills[0].qty == D("0.1234")


def test_thin_book_fills_partially_and_the_rest_expires(cfg):
    engine, mkt = make_engine(cfg, *WIDE)
    mkt.start(BIDS, [("2000.00", "0.5"), ("2000.50", "1.0")])
    order(engine, Side.BUY, "2.0")
    assert sum(f.qty for f in engine.fills) == D("1.5")
    assert engine.portfolio.positions["ETHUSDT"].qty == D("1.5")
    row = engine.ledger.order(engine.fills[0].order_id)
    assert row["state"] == "CANCELED"
    assert Decimal(row["filled_qty"]) == D("1.5")
    assert "filled 1.5 of 2.0" in engine.log[-1].text
    assert not engine.orders.open  # nothing left in flight


def test_latency_fills_on_the_later_book(cfg):
    engine, mkt = make_engine(cfg, "paper.latency_ms=50")
    mkt.start(BIDS, ASKS)
    order(engine, Side.BUY, "0.1")
    assert not engine.fills  # still on its way to the venue
    mkt.set_book(BIDS, [("2010.00", "1.0")], ms=10)  # the market moves during the latency
    mkt.idle(20)
    assert not engine.fills  # 31 ms later: not there yet
    mkt.set_book(BIDS, [("2020.00", "1.0")], ms=30)  # t+61 ms: this diff comes after the arrival
    (f,) = engine.fills
    assert f.price == D("2010.00")  # the book as it was 50 ms after sending, not at sending, not later
    assert f.ts == engine.ledger.query("SELECT created_ns FROM orders")[0][0] + 50_000_000
    assert "slippage +50.00 bps" in engine.log[-1].text  # priced at the 2000.00 touch when sent

    # the same order without latency fills on the book at sending
    engine2, mkt2 = make_engine(cfg, "paper.latency_ms=0")
    mkt2.start(BIDS, ASKS)
    order(engine2, Side.BUY, "0.1")
    assert engine2.fills[0].price == D("2000.00")


def test_limit_order_rests_and_fills_only_when_trades_go_through_it(cfg):
    engine, mkt = make_engine(cfg, "paper.maker_fee=0.0002")
    mkt.start(BIDS, ASKS)
    order(engine, Side.BUY, "0.1", limit_price=D("1995.00"))
    assert not engine.fills
    assert len(engine.orders.open) == 1
    mkt.trade("1995.00", "5")  # at the limit: we may be behind the queue, no fill
    mkt.trade("1996.00", "5")
    assert not engine.fills
    mkt.trade("1994.50", "0.04")  # through it: fills at the limit, for the traded size, as maker
    (f,) = engine.fills
    assert (f.price, f.qty, f.liquidity) == (D("1995.00"), D("0.04"), "maker")
    assert f.fee == D("1995.00") * D("0.04") * D("0.0002")
    mkt.trade("1990.00", "1")
    assert sum(x.qty for x in engine.fills) == D("0.1")
    assert engine.ledger.order(f.order_id)["state"] == "FILLED"
    assert not engine.orders.open
    assert engine.portfolio.positions["ETHUSDT"].entry_price == D("1995.00")


def test_marketable_limit_takes_what_is_inside_then_rests(cfg):
    engine, mkt = make_engine(cfg, *WIDE)
    mkt.start(BIDS, ASKS)
    order(engine, Side.BUY, "2.0", limit_price=D("2000.50"))
    assert [(f.price, f.qty) for f in engine.fills] == [(D("2000.00"), D("0.5")), (D("2000.50"), D("1.0"))]
    (oo,) = engine.orders.open.values()
    assert oo.remaining == D("0.5")
    assert oo.request.limit_price == D("2000.50")
    engine.submit(CancelOrders())
    engine.run_commands()
    assert not engine.orders.open
    assert engine.ledger.order(oo.request.client_id)["state"] == "CANCELED"
    mkt.trade("1990", "10")  # canceled orders never fill
    assert sum(f.qty for f in engine.fills) == D("1.5")


def test_short_needs_the_setting(cfg):
    engine, mkt = make_engine(cfg, "paper.allow_short=false")
    mkt.start(BIDS, ASKS)
    denied = collect(engine, OrderDenied)
    order(engine, Side.SELL, "0.1")
    assert denied[-1].code == "short_disabled"
    assert not engine.fills
    engine2, mkt2 = make_engine(cfg, "paper.allow_short=true")
    mkt2.start(BIDS, ASKS)
    order(engine2, Side.SELL, "0.1")
    pos = engine2.portfolio.positions["ETHUSDT"]
    assert pos.side is Side.SELL
    assert pos.qty == D("0.1")
    assert pos.entry_price == D("1999.50")
    mkt2.set_book([("1989.00", "1")], [("1990.00", "1")])
    assert pos.unrealised(D("1990")) == D("0.95")
    engine2.submit(ClosePosition("ETHUSDT"))
    engine2.run_commands()
    (closed,) = engine2.portfolio.closed
    assert closed.realised_pnl == (D("1999.50") - D("1990.00")) * D("0.1") - (D("199.95") + D("199.0")) * D("0.001")


def test_close_with_latency_is_not_sent_twice(cfg):
    engine, mkt = make_engine(cfg, "paper.latency_ms=20")
    mkt.start(BIDS, ASKS)
    order(engine, Side.BUY, "0.3")
    mkt.idle(30)
    assert engine.portfolio.positions["ETHUSDT"].qty == D("0.3")
    engine.submit(ClosePosition("ETHUSDT"))
    engine.submit(ClosePosition("ETHUSDT"))  # a second key press while the first is in flight
    engine.run_commands()
    assert "already on its way" in engine.log[-1].text
    mkt.idle(30)
    assert not engine.portfolio.positions
    assert len(engine.portfolio.closed) == 1
    assert engine.ledger.query("SELECT count(*) FROM orders")[0][0] == 2


def test_panic_cancels_flattens_and_halts(cfg):
    engine, mkt = make_engine(cfg)
    mkt.start(BIDS, ASKS)
    closed = collect(engine, PositionClosed)
    order(engine, Side.BUY, "0.2")
    order(engine, Side.BUY, "0.1", limit_price=D("1990.00"))
    assert len(engine.orders.open) == 1
    engine.submit(Panic())
    engine.run_commands()
    assert not engine.portfolio.positions
    assert len(closed) == 1
    assert not engine.orders.open
    assert engine.trading_state == "HALTED"
    assert engine.auto_trade is False
    assert "panic" in engine.risk.reason
    snap = engine.snapshot()
    assert snap.trading_state == "HALTED"
    assert "HALTED" in snap.banner
    denied = collect(engine, OrderDenied)
    order(engine, Side.BUY, "0.1")
    assert denied[-1].code == "halted"
    engine.submit(ResumeTrading())
    engine.run_commands()
    assert engine.trading_state == "ACTIVE"
    order(engine, Side.BUY, "0.1")
    assert engine.portfolio.positions["ETHUSDT"].qty == D("0.1")
    states = [r[0] for r in engine.ledger.query("SELECT state FROM trading_states ORDER BY seq")]
    assert states == ["HALTED", "ACTIVE"]


def test_sell_key_when_long_closes_the_whole_position_after_the_price_moved(cfg):
    """SPEC §4: SELL when long closes it. The order size at a lower price is a larger
    quantity; the key must not flip the position into a sliver of a short."""
    engine, mkt = make_engine(cfg, "paper.allow_short=true")
    mkt.start(BIDS, ASKS)
    engine.submit(ManualOrder("ETHUSDT", Side.BUY))
    engine.run_commands()
    long_qty = engine.portfolio.positions["ETHUSDT"].qty
    assert long_qty > 0
    mkt.set_book([("1899.50", "5")], [("1900.00", "5")])  # 5% lower: 100 USDT buys more ETH now
    assert engine.order_qty("ETHUSDT") > long_qty
    closed = collect(engine, PositionClosed)
    engine.submit(ManualOrder("ETHUSDT", Side.SELL))
    engine.run_commands()
    assert not engine.portfolio.positions, engine.portfolio.positions
    assert [c.qty for c in closed] == [long_qty]
    engine.submit(ManualOrder("ETHUSDT", Side.SELL))  # flat now: the key opens a short of the order size
    engine.run_commands()
    pos = engine.portfolio.positions["ETHUSDT"]
    assert (pos.side, pos.qty) == (Side.SELL, engine.order_qty("ETHUSDT"))
    engine.submit(ManualOrder("ETHUSDT", Side.BUY))  # BUY when short closes it
    engine.run_commands()
    assert not engine.portfolio.positions

"""Positions and realised PnL in exact arithmetic: long, short, fees, partials, flips."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from engine.core.events import OrderFilled, PositionClosed, PositionOpened, Side
from engine.execution.positions import Portfolio

FEE = D("0.001")


def fill(side, qty, price, n=[0]):  # noqa: B006 - a counter for unique ids
    n[0] += 1
    qty, price = D(qty), D(price)
    return OrderFilled(f"o{n[0]}", f"f{n[0]}", "ETHUSDT", side, qty, price, qty * price * FEE, n[0])


def test_long_round_trip_with_fees():
    pf = Portfolio()
    ev = pf.apply_fill(fill(Side.BUY, "0.5", "2000.10"))
    assert isinstance(ev[0], PositionOpened)
    ev = pf.apply_fill(fill(Side.SELL, "0.5", "2010.30"))
    closed = ev[0]
    assert isinstance(closed, PositionClosed)
    gross = (D("2010.30") - D("2000.10")) * D("0.5")
    fees = D("0.5") * D("2000.10") * FEE + D("0.5") * D("2010.30") * FEE
    assert closed.realised_pnl == gross - fees
    assert closed.fees == fees
    assert pf.realised_pnl == gross - fees
    assert pf.fees == fees
    assert not pf.positions


def test_short_profits_when_price_falls():
    pf = Portfolio(allow_short=True)
    pf.apply_fill(fill(Side.SELL, "2", "100"))
    assert pf.positions["ETHUSDT"].side is Side.SELL
    assert pf.positions["ETHUSDT"].unrealised(D("90")) == D("20")
    (closed,) = pf.apply_fill(fill(Side.BUY, "2", "90"))
    assert closed.realised_pnl == D("20") - (D("200") + D("180")) * FEE


def test_average_entry_and_partial_close():
    pf = Portfolio()
    pf.apply_fill(fill(Side.BUY, "1", "100"))
    pf.apply_fill(fill(Side.BUY, "3", "104"))
    pos = pf.positions["ETHUSDT"]
    assert pos.entry_price == D("103") and pos.qty == D("4")
    assert pf.apply_fill(fill(Side.SELL, "1", "110")) == []  # partial: still open
    assert pos.qty == D("3")
    (closed,) = pf.apply_fill(fill(Side.SELL, "3", "101"))
    gross = D("7") * 1 + D("-2") * 3
    fees = (D("100") + D("312") + D("110") + D("303")) * FEE
    assert closed.realised_pnl == gross - fees
    assert closed.qty == D("4")
    assert closed.exit_price == (D("110") + D("303")) / 4


def test_fill_larger_than_position_flips_it():
    pf = Portfolio(allow_short=True)
    pf.apply_fill(fill(Side.BUY, "1", "100"))
    events = pf.apply_fill(fill(Side.SELL, "3", "102"))
    assert [type(e) for e in events] == [PositionClosed, PositionOpened]
    closed, opened = events
    # the exit fee is split by quantity between the close and the new short
    assert closed.realised_pnl == D("2") - D("100") * FEE - D("306") * FEE / 3
    assert opened.side is Side.SELL and opened.qty == D("2")
    assert pf.positions["ETHUSDT"].fees == D("306") * FEE * 2 / 3


def test_short_refused_when_disabled():
    pf = Portfolio(allow_short=False)
    with pytest.raises(ValueError, match="allow_short"):
        pf.apply_fill(fill(Side.SELL, "1", "100"))


def test_paper_engine_buy_then_sell_on_real_book(btc_files, cfg):
    """A manual round trip through the engine on the real recorded book."""
    from engine.core.events import SubmitOrder
    from engine.kernel import replay_session

    cfg = cfg.with_overrides(["trading.auto_trade=false"])  # only the manual orders of this test
    session = replay_session(cfg, btc_files[:1], None)
    engine, replay = session.engine, session.replay
    events = replay.events()
    for ts, ev in events:  # run until the book is LIVE
        replay.clock.advance(ts)
        engine.on_market(ev)
        if engine.symbols.get("BTCUSDT") and engine.symbols["BTCUSDT"].book.state.value == "LIVE":
            break
    st = engine.symbols["BTCUSDT"]
    ask = st.book.best_ask()
    engine.submit(SubmitOrder("BTCUSDT", Side.BUY, D("0.01")))
    engine.run_commands()
    buy = engine.fills[-1]
    assert buy.price >= ask  # never better than the touch
    for _, (ts, ev) in zip(range(5000), events, strict=False):
        replay.clock.advance(ts)
        engine.on_market(ev)
    bid = st.book.best_bid()
    engine.submit(SubmitOrder("BTCUSDT", Side.SELL, D("0.01")))
    engine.run_commands()
    assert len(engine.portfolio.closed) == 1
    closed = engine.portfolio.closed[0]
    sells = [f for f in engine.fills if f.side is Side.SELL]
    exit_notional = sum(f.price * f.qty for f in sells)
    entry_notional = sum(f.price * f.qty for f in engine.fills if f.side is Side.BUY)
    fees = sum(f.fee for f in engine.fills)
    assert closed.realised_pnl == exit_notional - entry_notional - fees
    assert sells[0].price <= bid
    assert engine.balance() == cfg.paper.starting_balance + closed.realised_pnl
    engine.shutdown()  # the models' trainer thread ends, the ledger closes

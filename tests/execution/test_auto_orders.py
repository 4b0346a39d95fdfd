"""Automatic trading and the order path: one automatic order per symbol at a time (paper
latency longer than the decision interval used to stack them), and automatic trading
restored when a ledger-failure halt clears (a headless run has no key to turn it back on)."""

from __future__ import annotations

import itertools

from engine.core.events import DecisionMade, Panic, SetAutoTrading, Side, SubmitOrder, TradingStateChanged
from engine.execution.ledger import Ledger
from engine.kernel import attach_models
from engine.learning.host import ModelStore
from tests.support.config import settings_for
from tests.support.scorecard import record
from tests.support.scripted_market import D, make_engine

BIDS = [("1999.50", "5"), ("1999.00", "10")]
ASKS = [("2000.00", "5"), ("2000.50", "10")]

#: The DQN alone, fresh, every decision actionable while flat (score >= 0 opens a long,
#: anything below opens a short), no exploration, nothing saved, no side learners.
AUTO = ['models.enabled=["dqn"]', "models.load_checkpoints=false", "models.save_checkpoints=false",
        "fusion.open_threshold=0", "fusion.close_threshold=0", "fusion.explore_rate=0",
        "learning.shadow_positions=false", "learning.probe_every_s=0", "learning.online_perfect_moves=false",
        "models.decision_interval_ms=1000"]


def test_one_automatic_order_at_a_time_while_paper_latency_exceeds_the_decision_interval(tmp_path):
    cfg = settings_for(tmp_path / "data", *AUTO, "paper.latency_ms=4500")
    engine, mkt = make_engine(cfg)
    attach_models(engine, cfg, deterministic=True, store=ModelStore(None, None))
    decisions: list[DecisionMade] = []
    engine.bus.on(DecisionMade, decisions.append)
    mkt.start(BIDS, ASKS)
    working_at_decision = []
    for i in range(160):  # 16 s of market time, a message every 100 ms
        if i % 2:
            mkt.trade("2000.00" if i % 4 == 1 else "1999.50", "0.01", buyer_is_maker=i % 4 != 1, ms=100)
        else:
            mkt.idle(100)
        if decisions and len(working_at_decision) < len(decisions):
            working_at_decision.append(sum(1 for o in engine.orders.open.values() if o.request.reason == "auto"))
    engine.brain.close(save=False)
    rows = engine.ledger.query("SELECT seq, reason, state, created_ns, updated_ns, qty FROM orders ORDER BY seq")
    auto = [r for r in rows if r[1] == "auto"]
    assert len(decisions) >= 12
    # the first decision sends an order; the next four come while it is on its way and send none
    assert auto, rows
    assert max(working_at_decision) == 1
    for prev, nxt in itertools.pairwise(auto):
        assert prev[2] in ("FILLED", "CANCELED", "REJECTED")
        assert nxt[3] >= prev[4], (prev, nxt)  # the next one is sent only after the previous resolved
    skipped = [d for d in decisions if not d.executed and "still working" in d.why_not]
    assert len(skipped) >= 3
    assert engine.summary()["decisions_skipped_order_working"] == len(skipped)
    first = auto[0]
    assert first[4] - first[3] >= 4_500_000_000  # it really was in flight across several decisions
    record("orders", {"automatic orders stacked while one is working": max(working_at_decision) - 1})
    engine.shutdown()


def halted_by_a_full_disk(tmp_path):
    """A paper engine whose ledger's disk has filled up: the next order is refused (the
    ledger cannot journal it) and trading HALTs. Returns the engine, the trading states
    it announced and a function that gives the disk its space back."""
    cfg = settings_for(tmp_path / "data", "paper.latency_ms=0")
    engine, mkt = make_engine(cfg, ledger=Ledger(tmp_path / "paper.db", "paper"))
    mkt.start(BIDS, ASKS)
    states: list[str] = []
    engine.bus.on(TradingStateChanged, lambda ev: states.append(ev.state))
    assert engine.auto_trade is True
    led = engine.ledger
    led._db.execute(f"PRAGMA max_page_count = {led.query('PRAGMA page_count')[0][0]}")  # the disk fills up
    while led.healthy:
        led.record_trading_state("ACTIVE", "x" * 500, mkt.now)
    engine.send(SubmitOrder("ETHUSDT", Side.BUY, D("0.1")))
    assert engine.trading_state == "HALTED"

    def free_space() -> None:
        led._db.execute("PRAGMA max_page_count = 1073741823")

    return engine, states, free_space


def test_auto_trading_is_restored_when_a_ledger_failure_halt_clears(tmp_path):
    engine, states, free_space = halted_by_a_full_disk(tmp_path)
    assert engine.auto_trade is False  # a halt stops automatic trading...
    assert "ledger" in engine.snapshot().banner
    free_space()
    engine.housekeeping()
    assert engine.trading_state == "ACTIVE"
    assert engine.auto_trade is True  # ...and its clearing restores it, with a line saying so
    assert any("automatic trading restored" in line.text for line in engine.log)
    assert engine.snapshot().auto_trade is True
    assert states == ["HALTED", "ACTIVE"]
    engine.shutdown()


def test_a_halt_the_user_must_clear_does_not_restore_auto_trading(tmp_path):
    """A panic, or auto-trading switched off during the halt, stays the user's decision."""
    engine, _, free_space = halted_by_a_full_disk(tmp_path)
    engine.send(SetAutoTrading(False))  # the user decides while halted
    free_space()
    engine.housekeeping()
    assert engine.trading_state == "ACTIVE"
    assert engine.auto_trade is False
    engine.shutdown()


def test_a_panic_during_a_ledger_halt_keeps_auto_trading_off(tmp_path):
    engine, _, free_space = halted_by_a_full_disk(tmp_path)
    engine.send(Panic())
    free_space()
    engine.housekeeping()
    assert engine.trading_state == "HALTED"  # the panic's halt needs an explicit resume
    assert engine.auto_trade is False
    engine.shutdown()

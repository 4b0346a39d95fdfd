"""The desk's door into the engine (``engine.core.ports.DeskPort``): a snapshot, a command
that runs at once, the live confirmation. The snapshot carries everything the desk used
to read off the engine: the run mode and the quantity the next manual order would have."""

from __future__ import annotations

from engine.core.events import SetOrderSize, SetTraining
from engine.core.ports import DeskPort
from tests.support.scripted_market import D, make_engine

ASKS = [("2000.00", "0.5"), ("2000.50", "1.0")]
BIDS = [("1999.50", "0.5"), ("1999.00", "1.0")]


def test_send_runs_the_command_at_once(cfg):
    engine, _ = make_engine(cfg)
    port: DeskPort = engine  # mypy checks that the engine has the desk's door
    training = engine.training
    port.send(SetTraining(None))
    assert engine.training is not training, "applied without waiting for a market message"
    assert not engine._commands, "nothing left queued"


def test_snapshot_says_the_run_mode_and_the_next_order_quantity(cfg):
    engine, mkt = make_engine(cfg, "trading.order_notional=\"100\"", "trading.notional_step=\"100\"")
    snap = engine.snapshot()
    assert snap.run_mode == "replay"
    assert snap.order_qty is None, "no price yet: no quantity"
    mkt.start(BIDS, ASKS)
    snap = engine.snapshot()
    assert snap.order_qty == engine.order_qty(snap.primary)
    assert snap.order_qty is not None and snap.order_qty * D("1999.75") <= D("100")
    engine.send(SetOrderSize(1))
    assert engine.snapshot().order_qty == engine.order_qty(snap.primary) > snap.order_qty


def test_a_live_run_says_live(cfg):
    engine, _ = make_engine(cfg, mode="live")
    assert engine.snapshot().run_mode == "live"

"""The engine as a subprocess for the crash harness (``test_ledger_crash.py``).

``python -m tests.support.crash_worker run DB --orders N --seed S`` opens the paper ledger at
DB (restoring whatever a previous, killed run left), then trades on a constructed,
moving market until the ledger holds N orders: market buys and sells, closes, and limit
orders that rest and fill when trades go through them. Every fill the engine publishes
is printed as ``FILL <fill_id>`` (flushed) - that is what a user would have seen, so it
must survive any crash. ``TRADEDESK_CRASH_AT=<point>:<n>`` (engine.core.failpoints) makes the
process SIGKILL itself at a named point; the harness also kills it at random moments.

``python -m tests.support.crash_worker verify DB`` restores an engine from DB and prints what it
restored as one JSON line, then exits cleanly.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from decimal import Decimal
from pathlib import Path

from engine.core.clock import ReplayClock
from engine.core.engine import Engine
from engine.core.events import NS_PER_S, ClosePosition, OrderFilled, Side, SubmitOrder
from engine.execution.ledger import Ledger
from engine.kernel import build_engine
from tests.support.config import settings_for
from tests.support.scripted_market import T0, Market

OVERRIDES = [
    "risk.max_order_notional=100000", "risk.max_position_notional=1000000", "risk.max_daily_loss=1000000",
    "risk.max_orders_per_min=100000", "risk.max_consecutive_errors=1000", "paper.starting_balance=1000000",
    "paper.allow_short=true", "models.enabled=[]", "trading.auto_trade=false",
]


def make(db: Path, data_dir: Path) -> tuple[Engine, ReplayClock]:
    cfg = settings_for(data_dir, *OVERRIDES)
    ledger = Ledger(db, "paper")
    last = ledger.query("SELECT max(updated_ns) FROM orders")[0][0] or T0
    clock = ReplayClock(last)  # time goes on from where the last run stopped
    return build_engine(cfg, mode="live", clock=clock, ledger=ledger), clock


def run(db: Path, n_orders: int, seed: int) -> None:
    engine, clock = make(db, db.parent)
    engine.bus.on(OrderFilled, lambda f: print(f"FILL {f.fill_id}", flush=True))
    done = engine.ledger.stats().orders
    rng = random.Random(seed * 1_000_003 + done)
    mkt = Market(engine, clock, t0=clock.now_ns() + NS_PER_S)
    mid = Decimal(2000) + Decimal(rng.randint(-500, 500)) / 10
    tick = Decimal("0.01")

    def book() -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        bids = [(mid - tick * (1 + 5 * i), Decimal(rng.randint(1, 40)) / 100) for i in range(8)]
        asks = [(mid + tick * (1 + 5 * i), Decimal(rng.randint(1, 40)) / 100) for i in range(8)]
        return bids, asks

    mkt.start(*book())
    print("READY", flush=True)
    while engine.ledger.stats().orders < n_orders:
        mid += tick * rng.randint(-30, 30)
        mkt.set_book(*book(), ms=rng.randint(1, 50))
        r = rng.random()
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        qty = Decimal(rng.randint(1, 60)) / 100
        if r < 0.15:
            engine.submit(ClosePosition("ETHUSDT"))
        elif r < 0.30:
            px = mid - side.sign * tick * rng.randint(1, 40)
            engine.submit(SubmitOrder("ETHUSDT", side, qty, limit_price=px))
        else:
            engine.submit(SubmitOrder("ETHUSDT", side, qty))
        engine.run_commands()
        if rng.random() < 0.5:  # prints on both sides: resting orders that it goes through fill
            for _ in range(2):
                mkt.trade(mid + tick * rng.randint(-60, 60), Decimal(rng.randint(1, 50)) / 100,
                          rng.random() < 0.5, ms=rng.randint(1, 20))
        if engine.ledger.stats().orders == done:  # denied (e.g. a close with nothing open): move on
            continue
        done = engine.ledger.stats().orders
    print("DONE", flush=True)
    engine.shutdown()


def verify(db: Path) -> None:
    engine, _ = make(db, db.parent)
    pf = engine.portfolio
    out = {
        "positions": {s: str(p.qty * p.side.sign) for s, p in pf.positions.items()},
        "entry": {s: str(p.entry_price) for s, p in pf.positions.items()},
        "realised_pnl": str(pf.realised_pnl),
        "balance": str(engine.balance()),
        "fills": [f.fill_id for f in engine.fills],
        "open_orders": len(engine.orders.open),
        "unknown": len(engine.orders.reconciling),
        "restored": engine.orders.restored,
        "stored_positions": {s: str(p.qty * p.side.sign) for s, p in engine.ledger.stored_positions().items()},
    }
    engine.shutdown()
    print(json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("run", "verify"))
    p.add_argument("db", type=Path)
    p.add_argument("--orders", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.what == "run":
        run(a.db, a.orders, a.seed)
    else:
        verify(a.db)


if __name__ == "__main__":
    sys.exit(main())

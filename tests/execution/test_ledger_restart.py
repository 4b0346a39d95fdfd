"""The ledger: WAL file per account, intent before send, fills applied once, restart
restores positions and session PnL, one instance per ledger, and the faults it must
survive (newer schema, corrupt file, database locked, disk full) without losing a row."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from decimal import Decimal

import pytest

from engine.core.events import Contribution as C
from engine.core.events import (
    DecisionMade,
    ModelTrained,
    OrderDenied,
    Side,
    SignalEmitted,
    SubmitOrder,
)
from engine.execution.executor import ExecReport, OrderState
from engine.execution.ledger import Ledger, LedgerError, LedgerLocked, ledger_path
from engine.execution.paper_executor import PaperExecutor
from tests.conftest import ROOT
from tests.support.scorecard import record
from tests.support.scripted_market import D, make_engine

BIDS = [("1999.50", "5"), ("1999.00", "10")]
ASKS = [("2000.00", "5"), ("2000.50", "10")]


def order(engine, side, qty, **kw):
    engine.submit(SubmitOrder("ETHUSDT", side, D(qty), **kw))
    engine.run_commands()


def paper_db(cfg):
    return ledger_path(cfg.data_dir(), "paper")


def test_paper_ledger_is_a_wal_file_and_intent_precedes_send(cfg):
    path = paper_db(cfg)
    seen: list[str] = []

    class CheckingVenue(PaperExecutor):
        """The paper venue, plus a look at the ledger at the moment an order reaches it."""

        def submit(self, order, now):
            seen.append(led.order(order.client_id)["state"])
            return super().submit(order, now)

    led = Ledger(path, "paper")
    venue = CheckingVenue(D("0.001"))
    engine, mkt = make_engine(cfg, ledger=led, executor=venue)
    mkt.start(BIDS, ASKS)
    order(engine, Side.BUY, "0.1")
    assert seen == ["NEW"]  # journaled before the venue saw it
    assert led.order(engine.fills[0].order_id)["state"] == "FILLED"
    assert led.query("PRAGMA journal_mode")[0][0] == "wal"
    assert path == cfg.data_dir() / "ledger" / "paper.db"
    engine.shutdown()
    assert ledger_path(cfg.data_dir(), "live") != path


def test_restart_restores_positions_pnl_and_balance(cfg):
    path = paper_db(cfg)
    engine, mkt = make_engine(cfg, ledger=Ledger(path, "paper"))
    mkt.start(BIDS, ASKS)
    order(engine, Side.BUY, "0.3")
    order(engine, Side.SELL, "0.3")  # closed: realised PnL
    order(engine, Side.SELL, "0.2")  # an open short
    order(engine, Side.BUY, "0.1", limit_price=D("1990.00"))  # resting
    before = (engine.portfolio.realised_pnl, engine.balance(), engine.portfolio.fees,
              {s: (p.side, p.qty, p.entry_price, p.position_id) for s, p in engine.portfolio.positions.items()},
              list(engine.portfolio.closed), [f.fill_id for f in engine.fills])
    engine.shutdown()

    engine2, mkt2 = make_engine(cfg, ledger=Ledger(path, "paper"))
    after = (engine2.portfolio.realised_pnl, engine2.balance(), engine2.portfolio.fees,
             {s: (p.side, p.qty, p.entry_price, p.position_id) for s, p in engine2.portfolio.positions.items()},
             list(engine2.portfolio.closed), [f.fill_id for f in engine2.fills])
    assert after == before
    assert engine2.orders.restored["open_positions"] == 1
    assert engine2.orders.restored["resting_orders"] == 1
    assert engine2.orders.position_mismatches == 0
    assert any("restored 3 fills, 1 open position" in line.text for line in engine2.log)
    # the resting limit order outlived the process, as it would on an exchange
    mkt2.start(BIDS, ASKS)
    mkt2.trade("1989.00", "1")
    assert engine2.portfolio.positions["ETHUSDT"].qty == D("0.1")  # short 0.2 + 0.1 bought back
    # new orders continue the client id sequence: no id is ever reused
    order(engine2, Side.BUY, "0.1")
    ids = [r[0] for r in engine2.ledger.query("SELECT client_id FROM orders ORDER BY seq")]
    assert len(ids) == len(set(ids)) == 5
    assert not engine2.portfolio.positions
    engine2.shutdown()


def test_a_fill_reported_twice_is_applied_once(cfg):
    engine, mkt = make_engine(cfg)
    mkt.start(BIDS, ASKS)
    order(engine, Side.BUY, "0.1")
    (f,) = engine.fills
    again = ExecReport(f.order_id, OrderState.FILLED, f.ts, (f,))
    engine.orders.handle(again)  # the venue repeats itself (a retry, a reconnect replay)
    engine.orders.handle(again)
    assert len(engine.fills) == 1
    assert engine.portfolio.positions["ETHUSDT"].qty == D("0.1")
    assert engine.ledger.query("SELECT count(*) FROM fills")[0][0] == 1
    with pytest.raises(sqlite3.IntegrityError):  # and the table itself refuses a duplicate id
        engine.ledger._db.execute("INSERT INTO fills (fill_id, client_id, symbol, side, qty, price, fee, "
                                  "liquidity, slippage_bps, ts) VALUES (?,?,?,?,?,?,?,?,?,?)",
                                  (f.fill_id, f.order_id, "ETHUSDT", "BUY", "1", "1", "0", "taker", 0, 0))


def test_second_instance_on_the_same_ledger_is_refused(cfg):
    path = paper_db(cfg)
    first = Ledger(path, "paper")
    with pytest.raises(LedgerLocked, match="in use by another tradedesk process"):
        Ledger(path, "paper")
    code = ("import sys; from engine.execution.ledger import Ledger, LedgerLocked\n"
            f"try:\n    Ledger({str(path)!r}, 'paper')\nexcept LedgerLocked as e:\n    print(e); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert "in use" in r.stdout
    first.close()
    Ledger(path, "paper").close()  # free again once the first has gone


def test_newer_schema_corrupt_file_and_wrong_account_are_refused(cfg, tmp_path):
    path = paper_db(cfg)
    Ledger(path, "paper").close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError, match="newer tradedesk"):
        Ledger(path, "paper")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError, match="paper ledger, not live"):
        Ledger(path, "live")
    bad = tmp_path / "corrupt.db"
    junk = bytes(range(256)) * 64
    bad.write_bytes(junk)
    with pytest.raises(LedgerError, match="not a sound SQLite database"):
        Ledger(bad, "paper")
    assert bad.read_bytes() == junk  # left untouched
    # the engine refuses to start on it, with the reason (the CLI prints it and exits 2)
    with pytest.raises(LedgerError):
        make_engine(cfg, ledger=Ledger(bad, "paper"))


def test_a_schema_1_ledger_is_migrated_and_keeps_its_rows(cfg):
    path = paper_db(cfg)
    led = Ledger(path, "paper")
    led.record_reward(7, "account", 0.5, {"pnl": 0.5}, 123)
    led.close()
    with sqlite3.connect(path) as db:  # what a ledger written by schema 1 looked like
        for stmt in ("ALTER TABLE training DROP COLUMN scale", "ALTER TABLE training DROP COLUMN source",
                     "ALTER TABLE rewards DROP COLUMN source", "DROP TABLE training_skips",
                     "DROP TABLE shadow_positions",
                     "UPDATE meta SET value = '1' WHERE key = 'schema_version'"):
            db.execute(stmt)
    led = Ledger(path, "paper")
    assert led.query("SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]
    assert led.query("SELECT position_id, model, reward, source FROM rewards") == [(7, "account", 0.5, "account")]
    assert led.query("SELECT count(*) FROM training_skips") == [(0,)]
    led.close()


def test_disk_full_refuses_orders_and_loses_no_row(cfg):
    engine, mkt = make_engine(cfg, "paper.latency_ms=10", ledger=Ledger(paper_db(cfg), "paper"))
    mkt.start(BIDS, ASKS)
    order(engine, Side.BUY, "0.1")  # journaled, on its way to the venue
    led = engine.ledger
    led._db.execute(f"PRAGMA max_page_count = {led.query('PRAGMA page_count')[0][0]}")  # the disk fills up
    filler = 0
    while led.healthy and filler < 10_000:  # other journal rows use up what space is left
        led.record_trading_state("ACTIVE", "x" * 500, mkt.now)
        filler += 1
    assert not led.healthy
    assert "full" in led.last_error
    order(engine, Side.BUY, "0.1")  # refused, with the reason, and not sent
    assert engine.orders.last_denial.startswith("ledger writes are failing")
    assert "full" in engine.orders.last_denial
    assert engine.orders_sent == 1
    assert engine.trading_state == "HALTED"
    mkt.idle(20)  # the first order's fill arrives while the disk is full
    assert len(engine.fills) == 1  # applied in memory: it happened at the venue
    led._db.execute("PRAGMA max_page_count = 1073741823")  # space again
    engine.housekeeping()
    assert led.healthy
    assert engine.trading_state == "ACTIVE"
    rows = {t: led.query(f"SELECT count(*) FROM {t}")[0][0] for t in ("orders", "fills", "denials")}
    assert rows == {"orders": 1, "fills": 1, "denials": engine.denials}  # every row written, late but whole
    assert led.query("SELECT count(*) FROM trading_states WHERE reason = ?", ("x" * 500,))[0][0] == filler
    assert led.order(engine.fills[0].order_id)["state"] == "FILLED"
    order(engine, Side.SELL, "0.1")
    mkt.idle(20)
    assert not engine.portfolio.positions
    record("ledger", {"rows lost (disk full)": 0})
    engine.shutdown()


def test_rows_unwritten_at_exit_are_kept_and_written_at_the_next_start(cfg):
    path = paper_db(cfg)
    engine, mkt = make_engine(cfg, "paper.latency_ms=10", ledger=Ledger(path, "paper"))
    mkt.start(BIDS, ASKS)
    order(engine, Side.BUY, "0.1")
    led = engine.ledger
    led._db.execute(f"PRAGMA max_page_count = {led.query('PRAGMA page_count')[0][0]}")
    while led.healthy:
        led.record_trading_state("ACTIVE", "x" * 500, mkt.now)
    mkt.idle(20)  # the fill arrives; its rows cannot be written
    assert len(engine.fills) == 1
    assert not led.healthy
    engine.shutdown()  # still full at exit
    assert path.with_name("paper.db.unwritten.json").is_file()
    engine2, _ = make_engine(cfg, ledger=Ledger(path, "paper"))  # space again (a fresh connection)
    assert not path.with_name("paper.db.unwritten.json").exists()
    assert [f.fill_id for f in engine2.fills] == [f.fill_id for f in engine.fills]
    assert engine2.portfolio.positions["ETHUSDT"].qty == D("0.1")
    assert engine2.balance() == engine.balance()
    engine2.shutdown()


def test_database_locked_refuses_the_order_with_a_clear_error(cfg):
    path = paper_db(cfg)
    engine, mkt = make_engine(cfg, ledger=Ledger(path, "paper", busy_timeout_ms=100))
    mkt.start(BIDS, ASKS)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # e.g. a backup tool holding the write lock
    denied: list[OrderDenied] = []
    engine.bus.on(OrderDenied, denied.append)
    order(engine, Side.BUY, "0.1")
    assert denied[-1].code == "ledger"
    assert "locked" in denied[-1].reason
    assert engine.orders_sent == 0
    other.execute("ROLLBACK")
    other.close()
    order(engine, Side.BUY, "0.1")
    assert engine.orders_sent == 1
    assert engine.portfolio.positions["ETHUSDT"].qty == D("0.1")
    engine.shutdown()
    with Ledger(path, "paper") as led:  # the denial written during the lock was kept and written later
        assert led.query("SELECT code FROM denials")[0][0] == "ledger"


def test_models_journal_signals_decisions_rewards_and_training(cfg):
    engine, mkt = make_engine(cfg, ledger=Ledger(paper_db(cfg), "paper"))
    mkt.start(BIDS, ASKS)
    engine.bus.publish(SignalEmitted("cnn", "ETHUSDT", "BUY", 0.8, mkt.now, "1m"))
    engine.bus.publish(DecisionMade(7, "ETHUSDT", "BUY", 0.4, mkt.now, (C("cnn", "BUY", 0.8, 1.0),), True))
    order(engine, Side.BUY, "0.1", decision_id=7)
    order(engine, Side.SELL, "0.1")
    (closed,) = engine.portfolio.closed
    assert closed.decision_id == 7
    engine.ledger.record_reward(closed.position_id, "dqn", 0.25, {"pnl": 0.3, "time": -0.05}, mkt.now,
                                weight=0.5, step=3, loss=0.12)
    engine.bus.publish(ModelTrained("dqn", 3, 0.12, 0.25, closed.position_id, mkt.now))
    engine.shutdown()
    with Ledger(paper_db(cfg), "paper") as led:
        assert led.query("SELECT model, action FROM signals") == [("cnn", "BUY")]
        (dec,) = led.query("SELECT decision_id, contributions, executed FROM decisions")
        assert dec[0] == 7
        assert '"model": "cnn"' in dec[1]
        assert dec[2] == 1
        assert led.query("SELECT position_id, model, step FROM rewards") == [(closed.position_id, "dqn", 3)]
        assert led.query("SELECT model, step, position_id FROM training") == [("dqn", 3, closed.position_id)]
        (row,) = led.query("SELECT realised_pnl, decision_id FROM closed_positions")
        assert Decimal(row[0]) == closed.realised_pnl
        assert row[1] == 7


def test_each_replay_gets_its_own_ledger(cfg, tmp_path):
    from engine.kernel import replay_session

    a = replay_session(cfg.with_overrides(["models.enabled=[]"]), [], None).engine
    b = replay_session(cfg.with_overrides(["models.enabled=[]"]), [], None).engine
    assert a.ledger.path != b.ledger.path
    assert a.ledger.path.parent == cfg.data_dir() / "ledger" / "runs"
    assert a.ledger.nonce == b.ledger.nonce == "replay"  # deterministic client ids
    a.shutdown()
    b.shutdown()

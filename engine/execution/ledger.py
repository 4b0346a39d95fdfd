"""The ledger: a SQLite (WAL) journal of orders, fills, positions, denials, trading
states, signals, decisions, rewards and training events.

Rules that make it crash-safe by construction:

- An order's intent is committed before the order is sent; its outcome (confirmed,
  rejected, unknown) and its fills are committed in one transaction when the venue
  answers. Fills are unique by id (``INSERT OR IGNORE``), so a fill reported twice is
  stored once, and the engine applies it once.
- Positions are derived from the fills: on restart the engine rebuilds them by replaying
  the fill table in commit order; the ``positions`` table is a cross-check. The paper
  balance is likewise derived from the fills.
- One process per ledger: an exclusive ``flock`` on ``<file>.lock`` held for the life of
  the process (the kernel drops it when the process dies, even by SIGKILL).
- A ledger written by a newer tradedesk, or a file that is not a sound SQLite database,
  is refused with a clear message and left untouched.
- A write that fails (database locked past the busy timeout, disk full, I/O error) is
  kept in order in a backlog and retried; nothing is dropped. While the backlog is not
  empty the ledger is unhealthy and the engine refuses new orders.

Money is stored as decimal text (exact), timestamps as integer nanoseconds. Paper and
live accounts live in separate files (``<data_dir>/ledger/paper.db``, ``live.db``);
replays and backtests get a fresh file per run so they never restore into each other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.core.events import (
    DecisionMade,
    ModelTrained,
    OrderDenied,
    OrderFilled,
    PositionClosed,
    Side,
    SignalEmitted,
    TrainingSkipped,
)
from engine.execution.executor import ExecReport, OpenOrder, OrderRequest, OrderState, OrderType

try:  # POSIX; elsewhere the single-instance guard is SQLite's own locking only
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: training rows carry the scale and source; skipped updates have their own table
BUFFER_ROWS = 256  # journal rows (signals, decisions, rewards) batched per transaction

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sessions (
    session INTEGER PRIMARY KEY, started_wall_ns INTEGER NOT NULL, pid INTEGER NOT NULL
);
CREATE TABLE orders (
    seq INTEGER PRIMARY KEY,
    session INTEGER NOT NULL,
    client_id TEXT NOT NULL UNIQUE,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('BUY', 'SELL')),
    type TEXT NOT NULL,
    qty TEXT NOT NULL,
    limit_price TEXT,
    ref_price TEXT,
    reason TEXT NOT NULL,
    decision_id INTEGER,
    state TEXT NOT NULL,
    outcome TEXT NOT NULL,
    filled_qty TEXT NOT NULL DEFAULT '0',
    exchange_id TEXT,
    detail TEXT NOT NULL DEFAULT '',
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE INDEX orders_open ON orders (state) WHERE state IN ('NEW', 'SENT', 'OPEN', 'UNKNOWN');
CREATE TABLE fills (
    seq INTEGER PRIMARY KEY,
    fill_id TEXT NOT NULL UNIQUE,
    client_id TEXT NOT NULL REFERENCES orders (client_id),
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    qty TEXT NOT NULL,
    price TEXT NOT NULL,
    fee TEXT NOT NULL,
    liquidity TEXT NOT NULL,
    slippage_bps REAL NOT NULL,
    ts INTEGER NOT NULL,
    applied INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX fills_order ON fills (client_id);
CREATE TABLE positions (
    symbol TEXT PRIMARY KEY,
    position_id INTEGER NOT NULL,
    side TEXT NOT NULL,
    qty TEXT NOT NULL,
    entry_price TEXT NOT NULL,
    entry_ts INTEGER NOT NULL,
    fees TEXT NOT NULL,
    decision_id INTEGER
);
CREATE TABLE closed_positions (
    position_id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    qty TEXT NOT NULL,
    entry_price TEXT NOT NULL,
    exit_price TEXT NOT NULL,
    entry_ts INTEGER NOT NULL,
    exit_ts INTEGER NOT NULL,
    fees TEXT NOT NULL,
    realised_pnl TEXT NOT NULL,
    decision_id INTEGER
);
CREATE TABLE denials (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL,
    qty TEXT NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL
);
CREATE TABLE trading_states (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE signals (
    seq INTEGER PRIMARY KEY, session INTEGER NOT NULL, ts INTEGER NOT NULL, model TEXT NOT NULL, symbol TEXT NOT NULL,
    action TEXT NOT NULL, confidence REAL NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE decisions (
    session INTEGER NOT NULL, decision_id INTEGER NOT NULL, ts INTEGER NOT NULL, symbol TEXT NOT NULL,
    action TEXT NOT NULL, score REAL NOT NULL, contributions TEXT NOT NULL, executed INTEGER NOT NULL,
    why_not TEXT NOT NULL, PRIMARY KEY (session, decision_id)
);
CREATE TABLE rewards (
    seq INTEGER PRIMARY KEY, session INTEGER NOT NULL, ts INTEGER NOT NULL, position_id INTEGER, model TEXT NOT NULL,
    reward REAL NOT NULL, components TEXT NOT NULL, weight REAL, step INTEGER, loss REAL,
    source TEXT NOT NULL DEFAULT 'account'
);
CREATE TABLE training (
    seq INTEGER PRIMARY KEY, session INTEGER NOT NULL, ts INTEGER NOT NULL, model TEXT NOT NULL, step INTEGER NOT NULL,
    loss REAL, reward REAL, position_id INTEGER, scale REAL, source TEXT NOT NULL DEFAULT 'account'
);
CREATE TABLE training_skips (
    seq INTEGER PRIMARY KEY, session INTEGER NOT NULL, ts INTEGER NOT NULL, model TEXT NOT NULL, reason TEXT NOT NULL,
    reward REAL, position_id INTEGER, source TEXT NOT NULL DEFAULT 'account'
);
CREATE TABLE shadow_positions (
    seq INTEGER PRIMARY KEY, session INTEGER NOT NULL, model TEXT NOT NULL, position_id INTEGER NOT NULL,
    symbol TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL, entry_price TEXT NOT NULL, exit_price TEXT NOT NULL,
    entry_ts INTEGER NOT NULL, exit_ts INTEGER NOT NULL, fees TEXT NOT NULL, realised_pnl TEXT NOT NULL,
    exploratory INTEGER NOT NULL
);
"""

Op = tuple[str, tuple[Any, ...]]


class LedgerError(RuntimeError):
    """The ledger cannot be used; the message says why and what to do."""


class LedgerLocked(LedgerError):
    """Another tradedesk process holds this ledger."""


@dataclass
class StoredPosition:
    symbol: str
    position_id: int
    side: Side
    qty: Decimal
    entry_price: Decimal


@dataclass
class LedgerStats:
    orders: int = 0
    fills: int = 0
    unapplied_fills: int = 0
    open_orders: int = 0
    by_state: dict[str, int] = field(default_factory=dict)


def ledger_path(data_dir: Path, kind: str) -> Path:
    """``<data_dir>/ledger/<kind>.db``: kind is ``paper``, ``live`` or ``replay-<stamp>``."""
    return data_dir / "ledger" / f"{kind}.db"


def replay_ledger_path(data_dir: Path) -> Path:
    """A fresh file per replay/backtest run (wall time only names the file)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = data_dir / "ledger" / "runs" / f"replay-{stamp}-{os.getpid()}"
    n = 0
    while (path := base.with_name(f"{base.name}{f'-{n}' if n else ''}.db")).exists():
        n += 1  # several runs in one process within one second
    return path


def _held_elsewhere(lock_path: Path) -> Any:
    """Take ``lock_path``'s flock without waiting: the open file (keep it open while you
    delete), or None when another process holds it (its run is in progress)."""
    try:
        fh = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - closed by the caller
    except OSError:
        return None
    if fcntl is not None:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return None
    return fh


def prune_run_ledgers(folder: Path, keep: int) -> list[Path]:
    """Delete the replay/backtest run ledgers in ``folder`` (``<data_dir>/ledger/runs``)
    beyond the newest ``keep`` finished ones, each with its ``-wal``, ``-shm`` and lock
    files; returns the ledgers deleted.

    Never touched: a run in progress (its lock is held: we take the lock ourselves before
    deleting anything), a run that left unwritten rows beside it (``.unwritten.json``),
    anything not named ``replay-*.db``; the paper and live ledgers live one folder up.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    try:
        dbs = [p for p in folder.glob("replay-*.db") if p.is_file()]
    except OSError:
        return []

    def age(p: Path) -> tuple[float, str]:
        try:
            return (p.stat().st_mtime, p.name)
        except OSError:
            return (0.0, p.name)

    finished: list[Path] = []
    for db in sorted(dbs, key=age, reverse=True):
        if db.with_name(db.name + ".unwritten.json").exists():
            continue
        finished.append(db)
    deleted: list[Path] = []
    for db in finished[keep:]:
        lock_path = db.with_name(db.name + ".lock")
        fh = _held_elsewhere(lock_path)
        if fh is None:
            continue  # in progress (or not ours to take): never deleted
        try:
            for suffix in ("-wal", "-shm", ""):
                db.with_name(db.name + suffix).unlink(missing_ok=True)
            lock_path.unlink(missing_ok=True)
            deleted.append(db)
        except OSError as exc:
            log.warning("could not delete the old run ledger %s: %s", db, exc)
        finally:
            fh.close()
    with contextlib.suppress(OSError):
        for lock_path in folder.glob("replay-*.db.lock"):  # left by runs that never opened their ledger
            if lock_path.with_name(lock_path.name[:-len(".lock")]).exists():
                continue
            fh = _held_elsewhere(lock_path)
            if fh is not None:
                with fh:
                    lock_path.unlink(missing_ok=True)
    if deleted:
        log.info("deleted %d old run ledger(s) in %s (general.keep_run_ledgers = %d)", len(deleted), folder, keep)
    return deleted


def _d(x: str | None) -> Decimal | None:
    return None if x is None else Decimal(x)


class Ledger:
    """One account's journal. ``Ledger(None)`` is an in-memory ledger (tests, throwaway runs)."""

    def __init__(
        self,
        path: str | Path | None,
        mode: str = "paper",
        *,
        durable: bool = True,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.mode = mode
        self.busy_timeout_ms = busy_timeout_ms
        self._lock_fh: Any = None
        self._backlog: list[list[Op]] = []
        self._buffer: list[Op] = []
        self.last_error = ""
        self.write_failures = 0
        self.closed = False
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        try:
            self._db = self._connect(durable)
            self._init_schema()
            self._recover_spill()
        except sqlite3.Error as exc:
            self._release_lock()
            raise LedgerError(f"{self._name()} cannot be written ({type(exc).__name__}: {exc}); "
                              "is another program holding it, or the disk full?") from None
        except BaseException:
            self._release_lock()
            raise

    @classmethod
    def memory(cls, mode: str = "replay") -> Ledger:
        return cls(None, mode)

    # ------------------------------------------------------------------ opening

    def _take_lock(self) -> None:
        assert self.path is not None
        if fcntl is None:  # pragma: no cover
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        fh = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the ledger's life
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise LedgerLocked(
                f"the ledger {self.path} is in use by another tradedesk process (pid {holder}); "
                "a second instance on the same ledger is refused"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh

    def _release_lock(self) -> None:
        if self._lock_fh is not None:
            try:
                self._lock_fh.close()  # closing the descriptor drops the flock
            finally:
                self._lock_fh = None

    def _connect(self, durable: bool) -> sqlite3.Connection:
        target = str(self.path) if self.path is not None else ":memory:"
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly
            # what we say it is.
            db = sqlite3.connect(target, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if self.path is not None and str(mode).lower() != "wal":
                raise LedgerError(f"the ledger {self.path} could not be put in WAL mode (got {mode})")
            # FULL: a committed order or fill survives power loss, not just a process crash.
            # Replays are throwaway: NORMAL (still safe against a process crash in WAL mode).
            db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            db.execute("PRAGMA foreign_keys = ON")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise LedgerError(
                f"the ledger {target} is not a sound SQLite database ({exc}); it was left untouched - "
                "move it aside to start a new one, or restore a backup"
            ) from None
        if check != "ok":
            db.close()
            raise LedgerError(f"the ledger {target} failed its integrity check ({check}); it was left untouched")
        return db

    def _init_schema(self) -> None:
        db = self._db
        has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if tables:
                raise LedgerError(f"{self._name()} is a SQLite database but not a tradedesk ledger; refusing to touch it")
            nonce = "replay" if self.mode == "replay" else os.urandom(3).hex()
            with self._tx():
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("schema_version", str(SCHEMA_VERSION)), ("mode", self.mode), ("nonce", nonce),
                    ("created_wall_ns", str(time.time_ns())),
                ])
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self._name()} was written by a newer tradedesk (ledger schema {version}, this version reads "
                f"up to {SCHEMA_VERSION}); refusing to open it - upgrade tradedesk"
            )
        if version < 1:
            raise LedgerError(f"{self._name()} has no schema version; refusing to open it")
        if meta.get("mode") != self.mode:
            raise LedgerError(f"{self._name()} is a {meta.get('mode')} ledger, not {self.mode}; refusing to mix accounts")
        if version < SCHEMA_VERSION:
            self._migrate(version)
        self.nonce = meta["nonce"]
        # Decision ids restart with every run: rows that carry one also carry the session.
        with self._tx():
            cur = db.execute("INSERT INTO sessions (started_wall_ns, pid) VALUES (?, ?)", (time.time_ns(), os.getpid()))
        self.session = int(cur.lastrowid or 0)

    def _migrate(self, version: int) -> None:
        """Bring an older ledger up to this schema; nothing already written changes."""
        db = self._db
        with self._tx():
            if version < 2:
                db.execute("ALTER TABLE rewards ADD COLUMN source TEXT NOT NULL DEFAULT 'account'")
                db.execute("ALTER TABLE training ADD COLUMN scale REAL")
                db.execute("ALTER TABLE training ADD COLUMN source TEXT NOT NULL DEFAULT 'account'")
                for stmt in _SCHEMA.split(";"):
                    if "CREATE TABLE training_skips" in stmt or "CREATE TABLE shadow_positions" in stmt:
                        db.execute(stmt)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        log.info("%s: ledger schema %d migrated to %d", self._name(), version, SCHEMA_VERSION)

    def _spill_path(self) -> Path | None:
        return self.path.with_name(self.path.name + ".unwritten.json") if self.path is not None else None

    def _recover_spill(self) -> None:
        """Write the transactions a previous run could not write (kept beside the file at close)."""
        spill = self._spill_path()
        if spill is None or not spill.is_file():
            return
        try:
            txs = json.loads(spill.read_text(encoding="utf-8"))
            for tx in txs:
                self._run([(sql, tuple(params)) for sql, params in tx])
        except (ValueError, sqlite3.Error) as exc:
            raise LedgerError(f"{spill} holds {self._name()}'s unwritten rows and they cannot be written ({exc}); "
                              "free space or fix the file, then start again - nothing was dropped") from None
        spill.unlink()
        log.warning("wrote %d transactions left unwritten by the previous run (%s)", len(txs), spill)

    def _spill(self) -> None:
        """At close with writes still failing: keep them in a side file, written at the next start."""
        spill = self._spill_path()
        if spill is None:
            log.error("in-memory ledger closing with %d unwritten transactions", len(self._backlog))
            return
        tmp = spill.with_name(spill.name + ".tmp")
        old = json.loads(spill.read_text(encoding="utf-8")) if spill.is_file() else []
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(old + [[[sql, list(params)] for sql, params in tx] for tx in self._backlog], fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(spill)
        log.error("ledger closing with %d unwritten transactions (%s); kept in %s and written at the next start",
                  len(self._backlog), self.last_error, spill)

    def _name(self) -> str:
        return f"the ledger {self.path}" if self.path is not None else "the in-memory ledger"

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a busy database fails here (after the
        # busy timeout), not halfway through the transaction.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            # SQLite rolls back by itself on some errors (disk full, I/O): only roll back what is
            # still open, so the original error is the one reported.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _run(self, ops: list[Op]) -> None:
        with self._tx() as db:
            for sql, params in ops:
                db.execute(sql, params)

    @property
    def healthy(self) -> bool:
        """False while writes are waiting in the backlog (new orders are then refused)."""
        return not self._backlog

    def flush(self) -> bool:
        """Write the buffered journal rows and retry the backlog, in order. True when all is written."""
        if self.closed:
            return False
        if self._buffer:
            self._backlog.append(self._buffer)
            self._buffer = []
        while self._backlog:
            try:
                self._run(self._backlog[0])
            except sqlite3.Error as exc:
                self._failed(exc)
                return False
            self._backlog.pop(0)
        return True

    def _failed(self, exc: sqlite3.Error) -> None:
        self.write_failures += 1
        first = not self.last_error
        self.last_error = f"{type(exc).__name__}: {exc}"
        if first or self.write_failures in (10, 100) or self.write_failures % 1000 == 0:
            log.error("ledger write failed (%d so far; rows kept and retried): %s", self.write_failures, self.last_error)

    def _write(self, ops: list[Op]) -> bool:
        """Write ``ops`` as one transaction after everything before it. Never drops them."""
        if not self.flush():
            self._backlog.append(ops)
            return False
        try:
            self._run(ops)
        except sqlite3.Error as exc:
            self._failed(exc)
            self._backlog.append(ops)
            return False
        self.last_error = ""
        return True

    def _journal(self, op: Op) -> None:
        self._buffer.append(op)
        if len(self._buffer) >= BUFFER_ROWS:
            self.flush()

    # ------------------------------------------------------------------ orders & fills

    def next_order_seq(self) -> int:
        row = self._db.execute("SELECT max(seq) FROM orders").fetchone()
        return int(row[0] or 0) + 1

    def record_intent(self, o: OrderRequest, seq: int) -> None:
        """Commit the order before it is sent. Raises :class:`LedgerError` if it cannot be written
        (the engine then refuses the order: nothing is sent that is not journaled)."""
        if not self.flush():
            raise LedgerError(f"ledger writes are failing ({self.last_error}); new orders are refused until it recovers")
        try:
            self._run([(
                "INSERT INTO orders (seq, session, client_id, symbol, side, type, qty, limit_price, ref_price, "
                "reason, decision_id, state, outcome, created_ns, updated_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (seq, self.session, o.client_id, o.symbol, o.side.value, o.order_type.value, str(o.qty),
                 None if o.limit_price is None else str(o.limit_price),
                 None if o.ref_price is None else str(o.ref_price), o.reason, o.decision_id,
                 OrderState.NEW.value, OrderState.NEW.outcome.value, o.ts, o.ts),
            )])
        except sqlite3.Error as exc:
            self._failed(exc)
            raise LedgerError(f"the order could not be journaled ({type(exc).__name__}: {exc}); it was not sent") from None

    def record_outcome(self, rep: ExecReport, state: OrderState, filled: Decimal, detail: str = "") -> bool:
        """The venue's answer: new fills and the order's state, in one transaction."""
        ops: list[Op] = [(
            "INSERT OR IGNORE INTO fills (fill_id, client_id, symbol, side, qty, price, fee, liquidity, "
            "slippage_bps, ts) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (f.fill_id, rep.client_id, f.symbol, f.side.value, str(f.qty), str(f.price), str(f.fee),
             f.liquidity, float(f.slippage_bps), f.ts),
        ) for f in rep.fills]
        ops.append((
            "UPDATE orders SET state = ?, outcome = ?, filled_qty = ?, exchange_id = coalesce(?, exchange_id), "
            "detail = ?, updated_ns = ? WHERE client_id = ?",
            (state.value, state.outcome.value, str(filled), rep.exchange_id, detail or rep.reason, rep.ts, rep.client_id),
        ))
        return self._write(ops)

    def record_applied(self, fill_ids: Iterable[str], positions: dict[str, Any], closed: Iterable[PositionClosed]) -> bool:
        """After the fills are applied: mark them, store the touched positions and the closed ones.

        ``positions`` maps each touched symbol to its open ``Position`` or ``None`` when flat.
        """
        ops: list[Op] = [("UPDATE fills SET applied = 1 WHERE fill_id = ?", (fid,)) for fid in fill_ids]
        for sym, p in positions.items():
            if p is None:
                ops.append(("DELETE FROM positions WHERE symbol = ?", (sym,)))
            else:
                ops.append((
                    "INSERT OR REPLACE INTO positions (symbol, position_id, side, qty, entry_price, entry_ts, fees, "
                    "decision_id) VALUES (?,?,?,?,?,?,?,?)",
                    (sym, p.position_id, p.side.value, str(p.qty), str(p.entry_price), p.entry_ts, str(p.fees),
                     p.decision_id),
                ))
        for c in closed:
            ops.append((
                "INSERT OR IGNORE INTO closed_positions (position_id, symbol, side, qty, entry_price, exit_price, "
                "entry_ts, exit_ts, fees, realised_pnl, decision_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (c.position_id, c.symbol, c.side.value, str(c.qty), str(c.entry_price), str(c.exit_price),
                 c.entry_ts, c.exit_ts, str(c.fees), str(c.realised_pnl), c.decision_id),
            ))
        return self._write(ops)

    def record_denial(self, d: OrderDenied) -> None:
        self._write([(
            "INSERT INTO denials (ts, symbol, side, qty, code, reason, source) VALUES (?,?,?,?,?,?,?)",
            (d.ts, d.symbol, d.side.value, str(d.qty), d.code, d.reason, d.source),
        )])

    def record_trading_state(self, state: str, reason: str, ts: int) -> None:
        self._write([("INSERT INTO trading_states (ts, state, reason) VALUES (?,?,?)", (ts, state, reason))])

    # ------------------------------------------------------------------ the models' journal

    def record_signal(self, ev: SignalEmitted) -> None:
        """Journal a model signal (buffered; the engine does this for every SignalEmitted)."""
        self._journal(("INSERT INTO signals (session, ts, model, symbol, action, confidence, detail) "
                       "VALUES (?,?,?,?,?,?,?)",
                       (self.session, ev.ts, ev.model, ev.symbol, ev.action, float(ev.confidence), ev.detail)))

    def record_decision(self, ev: DecisionMade) -> None:
        """Journal a fused decision with its contributions (idempotent by this run's ``decision_id``;
        the engine does this for every DecisionMade published on the bus)."""
        contrib = json.dumps([{"model": c.model, "action": c.action, "confidence": c.confidence, "weight": c.weight}
                              for c in ev.contributions])
        self._journal((
            "INSERT OR REPLACE INTO decisions (session, decision_id, ts, symbol, action, score, contributions, "
            "executed, why_not) VALUES (?,?,?,?,?,?,?,?,?)",
            (self.session, ev.decision_id, ev.ts, ev.symbol, ev.action, float(ev.score), contrib, int(ev.executed), ev.why_not),
        ))

    def record_reward(
        self,
        position_id: int | None,
        model: str,
        reward: float,
        components: dict[str, float],
        ts: int,
        *,
        weight: float | None = None,
        step: int | None = None,
        loss: float | None = None,
        source: str = "account",
    ) -> None:
        """Journal one closed position's reward with its components (SPEC §6); ``model`` is
        whose position it was ("account", or the model of a shadow position)."""
        self._journal((
            "INSERT INTO rewards (session, ts, position_id, model, reward, components, weight, step, loss, source) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (self.session, ts, position_id, model, float(reward), json.dumps(components, sort_keys=True), weight, step,
             loss, source),
        ))

    def record_training(self, ev: ModelTrained) -> None:
        """Journal a real training step: model, reward, scale applied, step, loss (for every ModelTrained)."""
        self._journal(("INSERT INTO training (session, ts, model, step, loss, reward, position_id, scale, source) "
                       "VALUES (?,?,?,?,?,?,?,?,?)",
                       (self.session, ev.ts, ev.model, ev.step, float(ev.loss), float(ev.reward), ev.position_id,
                        float(ev.scale), ev.source)))

    def record_shadow(self, model: str, ev: PositionClosed, exploratory: bool) -> None:
        """Journal a model's closed shadow position (apart from the account's positions)."""
        self._journal((
            "INSERT INTO shadow_positions (session, model, position_id, symbol, side, qty, entry_price, exit_price, "
            "entry_ts, exit_ts, fees, realised_pnl, exploratory) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (self.session, model, ev.position_id, ev.symbol, ev.side.value, str(ev.qty), str(ev.entry_price),
             str(ev.exit_price), ev.entry_ts, ev.exit_ts, str(ev.fees), str(ev.realised_pnl), int(exploratory)),
        ))

    def record_skip(self, ev: TrainingSkipped) -> None:
        """Journal an update that did not happen, with its reason (never as a training step)."""
        self._journal(("INSERT INTO training_skips (session, ts, model, reason, reward, position_id, source) "
                       "VALUES (?,?,?,?,?,?,?)",
                       (self.session, ev.ts, ev.model, ev.reason, float(ev.reward), ev.position_id, ev.source)))

    # ------------------------------------------------------------------ reading (restart)

    def load_fills(self) -> list[tuple[OrderFilled, int | None]]:
        """Every fill in commit order, with the decision that sent its order."""
        rows = self._db.execute(
            "SELECT f.client_id, f.fill_id, f.symbol, f.side, f.qty, f.price, f.fee, f.ts, f.liquidity, "
            "f.slippage_bps, o.decision_id FROM fills f JOIN orders o USING (client_id) ORDER BY f.seq"
        ).fetchall()
        return [(OrderFilled(r[0], r[1], r[2], Side(r[3]), Decimal(r[4]), Decimal(r[5]), Decimal(r[6]), r[7], r[8],
                             r[9]), r[10]) for r in rows]

    def open_orders(self) -> list[OpenOrder]:
        """Orders that are not terminal: in flight or unknown at the last stop, or resting."""
        rows = self._db.execute(
            "SELECT client_id, symbol, side, type, qty, limit_price, reason, decision_id, created_ns, ref_price, "
            "state, filled_qty FROM orders WHERE state IN ('NEW', 'SENT', 'OPEN', 'UNKNOWN') ORDER BY seq"
        ).fetchall()
        out = []
        for r in rows:
            req = OrderRequest(r[0], r[1], Side(r[2]), Decimal(r[4]), OrderType(r[3]), _d(r[5]), r[6], r[7], r[8],
                               _d(r[9]))
            ids = {x[0] for x in self._db.execute("SELECT fill_id FROM fills WHERE client_id = ?", (r[0],))}
            out.append(OpenOrder(req, OrderState(r[10]), Decimal(r[11]), ids))
        return out

    def order(self, client_id: str) -> dict[str, Any] | None:
        cur = self._db.execute("SELECT * FROM orders WHERE client_id = ?", (client_id,))
        row = cur.fetchone()
        return None if row is None else dict(zip([c[0] for c in cur.description], row, strict=True))

    def stored_positions(self) -> dict[str, StoredPosition]:
        rows = self._db.execute("SELECT symbol, position_id, side, qty, entry_price FROM positions").fetchall()
        return {r[0]: StoredPosition(r[0], r[1], Side(r[2]), Decimal(r[3]), Decimal(r[4])) for r in rows}

    def stats(self) -> LedgerStats:
        db = self._db
        by_state = dict(db.execute("SELECT state, count(*) FROM orders GROUP BY state").fetchall())
        return LedgerStats(
            orders=sum(by_state.values()),
            fills=db.execute("SELECT count(*) FROM fills").fetchone()[0],
            unapplied_fills=db.execute("SELECT count(*) FROM fills WHERE applied = 0").fetchone()[0],
            open_orders=sum(v for k, v in by_state.items() if k in ("NEW", "SENT", "OPEN", "UNKNOWN")),
            by_state=by_state,
        )

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read-only access for tools and tests."""
        return self._db.execute(sql, params).fetchall()

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Flush, checkpoint the WAL into the main file, and release the lock."""
        if self.closed:
            return
        try:
            self.flush()
            if self._backlog:
                try:
                    self._spill()
                except OSError as exc:
                    log.error("ledger closing: %d unwritten transactions could not be kept (%s): %s",
                              len(self._backlog), exc, self._backlog)
            if self.path is not None:
                try:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:
                    log.warning("ledger checkpoint at close failed: %s", exc)
            self._db.close()
        finally:
            self.closed = True
            self._release_lock()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Ledger {self.mode} {self.path or ':memory:'}>"

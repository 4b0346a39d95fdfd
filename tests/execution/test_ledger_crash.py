"""The crash harness: SIGKILL the engine subprocess at each named crash point and at random
moments of a paper session, restart it, and check the ledger every time.

After every kill: ``PRAGMA integrity_check`` is ok on the file as the crash left it; the
restarted engine lost no trade it had published, applied no fill twice, and holds
exactly the positions and balance the fill ledger implies; no order is left unresolved.
(The checkpoint-write crash point belongs to the models' tests.)

The default run kills each named point once and a 500-order session at 50 random
moments (about a minute); ``make test-slow`` runs 2,000 orders with 200 kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.scorecard import record

POINTS = ("after_intent", "after_send", "after_fill", "after_position")
STARTING = Decimal(1_000_000)


def worker(*args: str, crash_at: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRADEDESK_CRASH_AT", None)
    if crash_at:
        env["TRADEDESK_CRASH_AT"] = crash_at
    return subprocess.Popen([sys.executable, "-m", "tests.support.crash_worker", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Campaign:
    """One ledger, many crashes; the figures RELIABILITY.md asks for."""

    def __init__(self, db: Path, orders: int, seed: int) -> None:
        self.db, self.orders, self.seed = db, orders, seed
        self.announced: set[str] = set()  # fills the engine published (what the user saw)
        self.kills = 0
        self.trades_lost = 0
        self.duplicate_fills = 0
        self.position_mismatch = 0
        self.integrity_failures = 0
        self.unresolved = 0
        self.restarts = 0
        self.repaired = 0
        self.rng = random.Random(seed)

    def _collect(self, lines: list[str]) -> None:
        for line in lines:
            if line.startswith("FILL "):
                self.announced.add(line.split()[1])

    def run_until_killed(self, crash_at: str | None = None, after_lines: int | None = None) -> bool:
        """Run the worker; kill it after ``after_lines`` fills (plus a random instant). True if it died."""
        p = worker("run", str(self.db), "--orders", str(self.orders), "--seed", str(self.seed), crash_at=crash_at)
        assert p.stdout is not None
        seen = 0
        lines = []
        killed_by_us = False
        for line in p.stdout:
            lines.append(line)
            if after_lines is not None and line.startswith("FILL "):
                seen += 1
                if seen >= after_lines:
                    time.sleep(self.rng.random() * 0.004)  # land anywhere, inside a commit included
                    p.send_signal(signal.SIGKILL)
                    killed_by_us = True
                    break
        rest, err = p.communicate(timeout=120)
        lines.extend(rest.splitlines())
        self._collect(lines)
        died = p.returncode == -signal.SIGKILL
        if not died:
            assert p.returncode == 0, err[-2000:]
        if died:
            self.kills += 1
            self.check_file()
        return died or killed_by_us

    def check_file(self) -> None:
        """The file as the crash left it: a sound database."""
        with sqlite3.connect(self.db) as db:
            if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                self.integrity_failures += 1

    def verify(self) -> dict:
        """Restart from the ledger and compare what it restored with the fills themselves."""
        p = subprocess.run([sys.executable, "-m", "tests.support.crash_worker", "verify", str(self.db)], cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        got = json.loads(p.stdout.strip().splitlines()[-1])
        self.restarts += 1
        self.repaired += got["restored"]["positions_repaired"]
        with sqlite3.connect(self.db) as db:
            if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                self.integrity_failures += 1
            rows = db.execute("SELECT fill_id, client_id, side, qty, price, fee FROM fills ORDER BY seq").fetchall()
            order_qty = dict(db.execute("SELECT client_id, qty FROM orders").fetchall())
            self.unresolved += db.execute(
                "SELECT count(*) FROM orders WHERE state IN ('NEW', 'SENT', 'UNKNOWN')").fetchone()[0]
        ids = [r[0] for r in rows]
        self.trades_lost += len(self.announced - set(ids))
        self.duplicate_fills += len(ids) - len(set(ids))
        self.duplicate_fills += len(got["fills"]) - len(set(got["fills"]))
        per_order: dict[str, Decimal] = defaultdict(Decimal)
        net = Decimal(0)
        cash = STARTING
        for _, cid, side, qty, price, fee in rows:
            sign = 1 if side == "BUY" else -1
            per_order[cid] += Decimal(qty)
            net += sign * Decimal(qty)
            cash -= sign * Decimal(qty) * Decimal(price) + Decimal(fee)
        self.duplicate_fills += sum(1 for cid, q in per_order.items() if q > Decimal(order_qty[cid]))  # overfilled
        restored = Decimal(got["positions"].get("ETHUSDT", "0"))
        stored = Decimal(got["stored_positions"].get("ETHUSDT", "0"))
        if restored != net or stored != net or Decimal(got["balance"]) != cash or got["fills"] != ids:
            self.position_mismatch += 1
        return got

    def figures(self) -> dict:
        return {"kills": self.kills, "restarts": self.restarts, "trades lost": self.trades_lost,
                "duplicate fills": self.duplicate_fills, "position mismatch": self.position_mismatch,
                "integrity_check failures": self.integrity_failures, "orders unresolved": self.unresolved,
                "fills": len(self.announced), "positions repaired from fills": self.repaired}

    def assert_clean(self) -> None:
        f = self.figures()
        assert (f["trades lost"], f["duplicate fills"], f["position mismatch"], f["integrity_check failures"],
                f["orders unresolved"]) == (0, 0, 0, 0, 0), f


def test_sigkill_at_each_named_point(tmp_path):
    totals: dict[str, int] = defaultdict(int)
    for i, point in enumerate(POINTS):
        c = Campaign(tmp_path / point / "paper.db", orders=30, seed=i + 1)
        c.db.parent.mkdir()
        assert c.run_until_killed(crash_at=f"{point}:{7 + i}"), f"{point} was never reached"
        assert c.kills == 1
        c.verify()
        c.run_until_killed()  # restart and finish the session
        c.verify()
        c.assert_clean()
        for k, v in c.figures().items():
            totals[k] += v
    record("ledger crash (named points)", dict(totals))


def random_campaign(tmp_path: Path, orders: int, kills: int, seed: int) -> dict:
    """SIGKILL a paper session of ``orders`` orders at ``kills`` random moments, restarting
    and verifying the ledger after each, then let it finish and verify once more."""
    c = Campaign(tmp_path / "paper.db", orders=orders, seed=seed)
    with_fills = max(2, 2 * orders // kills)  # ~1.7 fills per order: most kills land before the end
    for _ in range(20 * kills):  # bounded; each run either is killed or takes the session to its end
        if c.kills >= kills:
            break
        c.run_until_killed(after_lines=c.rng.randint(1, with_fills))
        c.verify()
        with sqlite3.connect(c.db) as db:
            done = db.execute("SELECT count(*) FROM orders").fetchone()[0]
        if done >= c.orders:  # the session ended before this kill: a loaded box let the worker run
            c.orders = done + max(10, orders // 10)  # ahead of the fills we read; give the next kills room
    c.run_until_killed()
    got = c.verify()
    c.assert_clean()
    assert c.kills == kills, f"{c.kills} of {kills} kills in {20 * kills} runs"
    with sqlite3.connect(c.db) as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone()[0] >= orders
    assert got["fills"]
    return c.figures()


def test_sigkill_campaign_500_orders_50_random_kills(tmp_path):
    record("ledger crash (50 random kills, 500 orders)", random_campaign(tmp_path, 500, 50, seed=500))


@pytest.mark.slow
def test_sigkill_campaign_2000_orders_200_random_kills(tmp_path):
    record("ledger crash (200 random kills, 2000 orders)", random_campaign(tmp_path, 2000, 200, seed=2000))

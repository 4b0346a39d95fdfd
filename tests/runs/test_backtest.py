"""`tradedesk backtest`: the models beside flat, buy-and-hold and random entries with the same
trades; the report's arithmetic; reruns byte-identical; the desk's checkpoints untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from engine.runs import baselines
from engine.runs.baselines import Tape, TapePoint, Trades
from models.cnn.cnn_agent import CNNAgent
from models.cob.cob_agent import COBAgent
from tests.conftest import BTC, ROOT, need_data

FORCED = ["--set", "fusion.explore_rate=0.2", "--set", "fusion.max_hold_s=20"]


def run_cli(*args: object, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tui.cli", *map(str, args), "--set", f'general.data_dir="{data_dir}"'],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def money(x: str) -> Decimal:
    return Decimal(x)


def test_backtest_report_has_every_key_and_its_arithmetic_holds(tmp_path):
    need_data(*BTC)
    rep_path = tmp_path / "r.json"
    r = run_cli("backtest", BTC[0], "--report", rep_path, *FORCED, data_dir=tmp_path / "data")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(rep_path.read_text())
    m = rep["models"]
    for key in ("trades", "wins", "realised_pnl", "unrealised_pnl", "fees", "net_pnl", "max_drawdown"):
        assert key in m, key
    assert money(m["net_pnl"]) == money(m["realised_pnl"]) + money(m["unrealised_pnl"]) - money(m["fees"])
    assert m["trades"] >= 2 and m["trades"] == m["closed"] + m["open_positions"]
    b = rep["baselines"]
    assert b["flat"]["net_pnl"] == "0" and "net_pnl" in b["buy_and_hold"]
    rnd = b["random"]
    assert rnd["runs"] >= 200
    assert money(rnd["net_pnl_p5"]) <= money(rnd["net_pnl_p50"]) <= money(rnd["net_pnl_p95"])
    v = rep["verdict"]
    assert set(v) >= {"rank_vs_random", "beats_random_p95", "beats_flat", "beats_buy_and_hold"}
    assert v["beats_flat"] == (money(m["net_pnl"]) > 0)
    assert v["beats_random_p95"] == (money(m["net_pnl"]) > money(rnd["net_pnl_p95"]))
    assert 0 <= v["rank_vs_random"] <= 100
    # The terminal version: the same figures and the curves, as plain text.
    assert "baselines  flat" in r.stdout and "random (" in r.stdout and "verdict" in r.stdout
    assert "net PnL marked to market" in r.stdout and "\x1b[" not in r.stdout


def test_two_backtests_give_byte_identical_reports_and_leave_the_desk_checkpoints_alone(tmp_path):
    need_data(*BTC)
    data = tmp_path / "data"
    ckpts = data / "checkpoints"
    ckpts.mkdir(parents=True)
    # The desk's own checkpoints, as a trader's machine would have them.
    CNNAgent(seed=3).save(ckpts / "cnn-small.pt")
    COBAgent(seed=4).save(ckpts / "cob-small.pt")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in ckpts.iterdir()}
    reports = []
    for i in range(2):
        rp = tmp_path / f"r{i}.json"
        r = run_cli("backtest", BTC[0], "--report", rp, *FORCED, data_dir=data)
        assert r.returncode == 0, r.stderr[-3000:]
        reports.append(rp.read_bytes())
    assert reports[0] == reports[1]
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in ckpts.iterdir()}
    assert after == before
    assert not (data / "ledger").exists()  # no run ledgers written either: the backtest has no side effects


def test_from_checkpoints_reads_the_desk_models_and_save_checkpoints_writes_elsewhere(tmp_path):
    need_data(*BTC)
    data = tmp_path / "data"
    out = tmp_path / "trained"
    r = run_cli("backtest", BTC[0], "--report", tmp_path / "a.json", "--save-checkpoints", out, *FORCED,
                data_dir=data)
    assert r.returncode == 0, r.stderr[-3000:]
    saved = sorted(p.name for p in out.glob("*.pt"))
    assert "cob-small.pt" in saved
    assert not (data / "checkpoints").exists()
    # Put them where the desk keeps its models, then start a backtest from them, read-only.
    (data / "checkpoints").mkdir(parents=True)
    for p in out.glob("*.pt"):
        (data / "checkpoints" / p.name).write_bytes(p.read_bytes())
    stamp = {p.name: p.stat().st_mtime_ns for p in (data / "checkpoints").iterdir()}
    rep_fresh = json.loads((tmp_path / "a.json").read_text())
    r = run_cli("backtest", BTC[0], "--report", tmp_path / "b.json", "--from-checkpoints", *FORCED, data_dir=data)
    assert r.returncode == 0, r.stderr[-3000:]
    rep_loaded = json.loads((tmp_path / "b.json").read_text())
    assert {p.name: p.stat().st_mtime_ns for p in (data / "checkpoints").iterdir()} == stamp
    # The loaded models start where the first run ended: their step counts carry on.
    first, second = rep_fresh["training"]["steps"], rep_loaded["training"]["steps"]
    assert second["cob"] > first["cob"] > 0


def _tape(n: int, seed: int, drift: float = 0.0) -> Tape:
    rng = np.random.default_rng(seed)
    mid = 2000.0
    tape = Tape(Decimal("0.001"), True)
    for i in range(n):
        mid *= float(np.exp(drift + 0.0005 * rng.standard_normal()))
        m = Decimal(f"{mid:.2f}")
        tape.add(TapePoint(i * 1_000_000_000, m, Decimal("0.05"), m + Decimal("0.05"), m - Decimal("0.05")))
    return tape


def test_random_baseline_draws_land_inside_their_band_at_the_expected_rate():
    """Independent draws of the same random policy fall inside the 5-95 % band of the
    reference draws about 90 % of the time (binomial bounds for 400 draws)."""
    tape = _tape(3600, seed=1)
    trades = Trades(tuple(int(d) * 1_000_000_000 for d in np.random.default_rng(2).integers(20, 120, size=25)))
    ref = baselines.random_draws(tape, trades, 500, seed=11)
    p5, p95 = np.percentile(ref, [5, 95])
    fresh = baselines.random_draws(tape, trades, 400, seed=12)
    inside = float(((fresh >= p5) & (fresh <= p95)).mean())
    assert 0.84 <= inside <= 0.95, inside
    assert baselines.rank_vs_random(float(np.median(ref)), ref) == pytest.approx(50.0, abs=1.0)
    # The random policy pays its fees: with no drift its median loses about two fees a trade.
    fee_per_trade = 2 * 0.001 * 2000 * 0.05
    assert np.median(ref) == pytest.approx(-(fee_per_trade + 0.1 * 0.05) * trades.count, rel=0.35)


def test_buy_and_hold_and_flat_on_a_known_tape():
    tape = _tape(100, seed=3, drift=0.001)  # a steady climb
    bh = baselines.buy_and_hold(tape)
    p0, last = tape.points[0], tape.points[-1]
    expect = (last.mid - p0.buy_px) * p0.qty - Decimal("0.001") * p0.buy_px * p0.qty
    assert Decimal(str(bh["net_pnl"])) == expect > 0
    assert baselines.flat() == {"net_pnl": "0"}
    assert baselines.random_draws(tape, Trades(()), 50, seed=1).tolist() == [0.0] * 50


def test_walk_forward_reports_its_arms_and_verdicts(tmp_path):
    need_data(*BTC)
    rp = tmp_path / "wf.json"
    r = run_cli("backtest", *BTC, "--walk-forward", "3", "--report", rp, *FORCED, data_dir=tmp_path / "data")
    assert r.returncode == 0, r.stderr[-3000:]
    wf = json.loads(rp.read_text())["walk_forward"]
    assert [f["fold"] for f in wf["folds"]] == [1, 2]
    for f in wf["folds"]:
        for arm in ("learning", "untrained"):
            a = f[arm]
            assert money(a["net_pnl"]) == money(a["realised_pnl"]) + money(a["unrealised_pnl"]) - money(a["fees"])
        assert set(f["baselines"]) == {"flat", "buy_and_hold", "random"}
    oos = wf["out_of_sample"]
    assert set(oos) >= {"learning", "untrained", "random"}
    assert set(oos["learning"]) >= {"net_pnl", "trades"} and set(oos["untrained"]) >= {"net_pnl", "trades"}
    assert set(oos["random"]) >= {"net_pnl_p5", "net_pnl_p50", "net_pnl_p95"}
    assert money(oos["learning"]["net_pnl"]) == sum(money(f["learning"]["net_pnl"]) for f in wf["folds"])
    v = wf["verdict"]
    assert v["learning_beats_untrained"] == (money(oos["learning"]["net_pnl"]) > money(oos["untrained"]["net_pnl"]))
    assert set(v) >= {"learning_beats_untrained", "learning_beats_random_p95"}
    assert "out of sample" in r.stdout
    # The learning arm's models learned on the folds before: their step counts grow fold by fold.
    steps = [sum(f["learning"]["learned_steps"].values()) for f in wf["folds"]]
    assert steps[0] <= steps[1] and steps[1] > 0

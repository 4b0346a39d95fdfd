"""Walk-forward evaluation: learn on the past, judge on data the models never saw.

The data is split into K consecutive folds by market time. One training pass runs the
desk's own learning loop (learning on close, at max speed) from the first fold on, and
keeps the models as they are at the end of each fold. Then every fold after the first
is replayed with training frozen and exploration off, three ways:

- **learning**: the models as they were after learning on every earlier fold;
- **untrained**: fresh models with the same seed;
- **baselines**: flat, buy-and-hold over the fold, and random entries with the learning
  arm's trades (same count, same hold durations) on the fold's recorded book.

Each evaluation replays the data from its start so books, bars and indicators are warm,
but the models stay dormant and nothing trades before the fold begins; the fold ends
with open positions marked at its last mid. The out-of-sample figures add the folds up.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from engine.core.events import NS_PER_S
from engine.market.capture import capture_span
from engine.runs import baselines
from engine.runs.backtest import BacktestRecorder, accounting, arm_trades, compare

ZERO = Decimal(0)


@dataclass
class WalkForward:
    report: dict[str, Any]


def fold_edges(start_ns: int, end_ns: int, k: int) -> list[int]:
    """K+1 edges: fold i is [edges[i], edges[i+1]) in receive time; the last edge is past the end."""
    span = end_ns - start_ns
    return [start_ns + span * i // k for i in range(k)] + [end_ns + 1]


def evaluate_fold(cfg: Any, paths: list[Path], models_from: Path | None, start: int, end: int) -> tuple[Any, Any, Any]:
    """One frozen arm on one fold: (accounting, recorder, trades)."""
    from engine.kernel import backtest_session

    session = backtest_session(cfg, paths, checkpoints_from=models_from, frozen=True, active_from_ns=start)
    engine = session.engine
    rec = BacktestRecorder(engine, start, end)
    try:
        session.replay.run_sync(stop_at_ns=end)
        engine.run_commands()
        acct = accounting(engine, rec.arm)
        trades = arm_trades(engine, rec.arm, min(end, engine.clock.now_ns()))
        acct["decisions"] = engine.decisions
        acct["training_steps"] = engine.brain.training_steps() if engine.brain is not None else {}
    finally:
        session.close()
    return acct, rec, trades


def walk_forward(cfg: Any, paths: list[Path], k: int, *, checkpoints_from: Path | None = None,
                 save_to: Path | None = None, progress: TextIO | None = sys.stderr,
                 random_runs: int = 500) -> WalkForward:
    """Run the walk-forward evaluation over ``paths`` in ``k`` folds (see the module docstring)."""
    from engine.kernel import backtest_session

    if k < 2:
        raise ValueError(f"walk-forward needs at least 2 folds, got {k}")
    start, end = capture_span(paths)
    edges = fold_edges(start, end, k)
    seed = cfg.general.seed

    def say(text: str) -> None:
        if progress is not None:
            print(f"walk-forward: {text}", file=progress, flush=True)

    with tempfile.TemporaryDirectory(prefix="tradedesk-wf-") as tmp:
        snapshots: list[Path] = []
        session = backtest_session(cfg, paths, checkpoints_from=checkpoints_from)
        learned_steps: list[dict[str, int]] = []
        try:
            for f in range(1, k):
                say(f"learning on fold {f - 1} (and before)")
                session.replay.run_sync(stop_at_ns=edges[f])
                folder = Path(tmp) / f"after-fold-{f - 1}"
                if session.brain is not None:
                    session.brain.wait_for_training()
                    session.brain.host.save_checkpoints(folder)
                    learned_steps.append(session.brain.training_steps())
                snapshots.append(folder)
            if save_to is not None and session.brain is not None:
                session.brain.host.save_checkpoints(save_to)
        finally:
            session.close()

        folds = []
        sums = {"learning": ZERO, "untrained": ZERO}
        trades = {"learning": 0, "untrained": 0}
        draws_total = np.zeros(random_runs)
        for f in range(1, k):
            lo, hi = edges[f], edges[f + 1]
            say(f"fold {f}: learning arm")
            learn, rec, learn_trades = evaluate_fold(cfg, paths, snapshots[f - 1], lo, hi)
            say(f"fold {f}: untrained arm")
            fresh, _, _ = evaluate_fold(cfg, paths, checkpoints_from, lo, hi)
            cmp = compare(Decimal(learn["net_pnl"]), rec.arm.tape, learn_trades, seed + 1000 * f, random_runs)
            draws = cmp.pop("_draws")
            draws_total += draws if len(draws) == random_runs else 0.0
            folds.append({
                "fold": f,
                "start_ns": lo,
                "end_ns": min(hi, end),
                "minutes": round((min(hi, end) - lo) / NS_PER_S / 60, 2),
                "learning": {**learn, "learned_steps": learned_steps[f - 1] if learned_steps else {},
                             "verdict": cmp["verdict"]},
                "untrained": fresh,
                "baselines": cmp["baselines"],
            })
            for arm, acct in (("learning", learn), ("untrained", fresh)):
                sums[arm] += Decimal(acct["net_pnl"])
                trades[arm] += int(acct["trades"])
    rnd = baselines.random_summary(draws_total)
    p95 = Decimal(str(rnd.get("net_pnl_p95", "0")))
    oos = {
        "learning": {"net_pnl": str(sums["learning"]), "trades": trades["learning"]},
        "untrained": {"net_pnl": str(sums["untrained"]), "trades": trades["untrained"]},
        "random": rnd,
        "buy_and_hold": {"net_pnl": str(sum((Decimal(str(x["baselines"]["buy_and_hold"]["net_pnl"]))
                                             for x in folds), ZERO))},
    }
    verdict = {
        "learning_beats_untrained": sums["learning"] > sums["untrained"],
        "learning_beats_random_p95": bool(trades["learning"]) and sums["learning"] > p95,
        "rank_vs_random": baselines.rank_vs_random(float(sums["learning"]), draws_total),
    }
    rep = {
        "run": {"files": [p.name for p in paths], "seed": seed, "folds": k, "start_ns": start, "end_ns": end,
                "edges_ns": edges},
        "walk_forward": {"folds": folds, "out_of_sample": oos, "verdict": verdict},
    }
    return WalkForward(rep)


def render_walk_forward(rep: dict[str, Any]) -> str:
    wf = rep["walk_forward"]
    lines = [f"walk-forward over {rep['run']['folds']} folds (fold 0 only teaches; the rest are out of sample)"]
    for f in wf["folds"]:
        ln, un, b = f["learning"], f["untrained"], f["baselines"]
        rnd = b["random"]
        lines.append(
            f"fold {f['fold']} ({f['minutes']:.1f} min): learning net {_f(ln['net_pnl'])} in {ln['trades']} trades "
            f"(steps learned {ln['learned_steps']}) | untrained net {_f(un['net_pnl'])} in {un['trades']} trades | "
            f"buy & hold {_f(b['buy_and_hold']['net_pnl'])} | random p5 {_f(rnd.get('net_pnl_p5'))} "
            f"p50 {_f(rnd.get('net_pnl_p50'))} p95 {_f(rnd.get('net_pnl_p95'))}")
    o, v = wf["out_of_sample"], wf["verdict"]
    r = o["random"]
    lines += [
        f"out of sample: learning {_f(o['learning']['net_pnl'])} ({o['learning']['trades']} trades), untrained "
        f"{_f(o['untrained']['net_pnl'])} ({o['untrained']['trades']} trades), buy & hold "
        f"{_f(o['buy_and_hold']['net_pnl'])}, random p5 {_f(r.get('net_pnl_p5'))} p50 {_f(r.get('net_pnl_p50'))} "
        f"p95 {_f(r.get('net_pnl_p95'))}",
        f"verdict: learning beats untrained: {'yes' if v['learning_beats_untrained'] else 'no'}; "
        f"beats random p95: {'yes' if v['learning_beats_random_p95'] else 'no'} "
        f"(beats {v['rank_vs_random']:.1f} % of random draws)",
    ]
    return "\n".join(lines)


def _f(x: object) -> str:
    return "-" if x is None else f"{float(str(x)):+.4f}"

"""``tradedesk bench``: the figures of BENCH.md, measured side by side in one run.

Every figure carries its environment. Nothing here asserts a time: the report says
what was measured, the targets are in BENCH.md.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.core.clock import ReplayClock
from engine.core.engine import Engine
from engine.core.events import Trade
from engine.core.settings import Settings
from engine.kernel import build_engine, replay_session
from engine.market.capture import merged_lines
from engine.market.parse import Parser, reset_caches

R1 = ("btcusdt_20240808.gz", "btcusdt_20240809.gz")


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "TEXTUAL_FPS": os.environ.get("TEXTUAL_FPS"),
    }
    try:
        import torch

        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                   cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except ImportError:  # pragma: no cover
        env["torch"] = None
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _rss_mb() -> float:
    """Current resident set size (Linux /proc), else the peak."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_lines(paths: list[Path]) -> list[tuple[int, bytes, str | None]]:
    """R1 decompressed into memory, so ingest figures exclude gzip."""
    hints, lines = merged_lines(paths)
    return [(cl.ts_recv, cl.payload, hints[cl.source]) for cl in lines]


def _best_of(n: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(n))


def ingest_once(cfg: Settings, lines: list[tuple[int, bytes, str | None]]) -> tuple[float, Engine]:
    clock = ReplayClock()
    engine = build_engine(cfg, mode="backtest", clock=clock)
    parser = Parser()
    gc.collect()
    t0 = time.perf_counter()
    on_market, advance, parse = engine.on_market, clock.advance, parser.parse_frame
    for ts, payload, hint in lines:
        ev = parse(payload, ts, hint)
        if ev is not None:
            advance(ts)
            on_market(ev)
    return time.perf_counter() - t0, engine


def bench_ingest(cfg: Settings, paths: list[Path], repeats: int) -> dict[str, Any]:
    """B1 (msgs/s, parse → book → bars → features) and B2 (÷ json.loads alone)."""
    lines = load_lines(paths)
    n = len(lines)
    times = []
    engine = None
    for _ in range(repeats):
        reset_caches()  # every run starts cold, as a fresh process would
        t, engine = ingest_once(cfg, lines)
        times.append(t)
    payloads = [p for _, p, _ in lines]

    def json_only() -> float:
        t0 = time.perf_counter()
        for p in payloads:
            json.loads(p)
        return time.perf_counter() - t0

    json_s = _best_of(repeats, json_only)
    best = min(times)
    assert engine is not None
    return {
        "B1_msgs_per_s": round(n / best),
        "B1_messages": n,
        "B1_best_s": round(best, 4),
        "B1_median_s": round(statistics.median(times), 4),
        "B1_target": 200_000,
        "B2_json_loads_s": round(json_s, 4),
        "B2_ratio_over_json": round(best / json_s, 2),
        "B2_target": 2.0,
        "trades": sum(st.trades for st in engine.symbols.values()),
    }


def bench_naive(cfg: Settings, paths: list[Path], n_trades: int) -> dict[str, Any]:
    """B3: the seed dashboard's pandas-per-trade design vs ours, µs per trade."""
    import pandas as pd

    lines = load_lines(paths)
    parser = Parser()
    trades: list[Trade] = []
    for ts, payload, hint in lines:
        ev = parser.parse_frame(payload, ts, hint)
        if isinstance(ev, Trade):
            trades.append(ev)
    sample = trades[:n_trades]

    def naive() -> float:
        df = pd.DataFrame(columns=["ts", "price", "qty"])
        t0 = time.perf_counter()
        for t in sample:
            df.loc[len(df)] = [pd.Timestamp(t.ts_event, unit="ns"), float(t.price), float(t.qty)]
            recent = df.iloc[-3000:].set_index("ts")
            bars = recent["price"].resample("1s").ohlc()
            bars["volume"] = recent["qty"].resample("1s").sum()
            close = bars["close"].ffill()
            close.rolling(20).mean()
            delta = close.diff()
            gain = delta.clip(lower=0).rolling(14).mean()
            loss = (-delta.clip(upper=0)).rolling(14).mean()
            _ = 100 - 100 / (1 + gain / loss)
        return (time.perf_counter() - t0) / len(sample)

    def ours() -> float:
        engine = build_engine(cfg, mode="backtest")
        st = engine.add_symbol(trades[0].symbol)
        t0 = time.perf_counter()
        for t in trades:
            engine._on_trade(st, t)
        return (time.perf_counter() - t0) / len(trades)

    naive_s = naive()
    ours_s = _best_of(3, ours)
    return {
        "B3_naive_us_per_trade": round(naive_s * 1e6, 1),
        "B3_naive_trades_measured": len(sample),
        "B3_ours_us_per_trade": round(ours_s * 1e6, 2),
        "B3_speedup": round(naive_s / ours_s, 1),
        "B3_target": 100,
    }


def _pcts(vals: list[float]) -> dict[str, float | None]:
    v = sorted(vals)
    if not v:
        return {"p50": None, "p99": None, "p999": None, "max": None, "n": 0}

    def q(x: float) -> float:
        return round(v[min(len(v) - 1, int(x * len(v)))], 3)

    return {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": round(v[-1], 3), "n": len(v)}


def _bench_cfg(cfg: Settings, tmp: Path, *extra: str) -> Settings:
    # A private data dir: benchmarks neither load nor overwrite the user's checkpoints.
    return cfg.with_overrides([f'general.data_dir="{tmp}"', "models.load_checkpoints=false",
                               "models.save_checkpoints=false", *extra])


def bench_backtest(cfg: Settings, paths: list[Path], tmp: Path) -> dict[str, Any]:
    """B4 (backtest × real time, all models on), B5 at max speed, B8 (train-on-close cost)."""
    bcfg = _bench_cfg(cfg, tmp / "b4", "fusion.explore_rate=0.05", "fusion.max_hold_s=60")
    session = replay_session(bcfg, paths, None, mode="backtest")
    engine, brain = session.engine, session.brain
    assert brain is not None, "B4 needs the models on"
    t0 = time.perf_counter()
    session.replay.run_sync()
    brain.wait_for_training()
    wall = time.perf_counter() - t0
    span = (engine.clock.now_ns() - int(str(engine.replay_info["first_ns"]))) / 1e9
    train_ms = list(brain.trainer.wall_ms)
    summary = engine.summary(wall)
    engine.shutdown()
    return {
        "B4_x_realtime": round(span / wall, 1),
        "B4_wall_s": round(wall, 2),
        "B4_market_s": round(span, 1),
        "B4_target": 100,
        "B4_decisions": summary["decisions"],
        "B4_positions_closed": summary["positions_closed"],
        "B5_max_speed_decision_ms": _pcts(list(brain.decision_latency_ms)),
        "B8_train_ms_per_close_per_model": _pcts(train_ms),
        "B8_closes_behind": summary["training_dropped"],
    }


async def _paced(cfg: Settings, paths: list[Path], speed: float, tmp: Path) -> dict[str, Any]:
    """A live-like run: inference by callback, training in its thread, an event-loop probe."""
    import asyncio

    from engine.execution.ledger import Ledger

    bcfg = _bench_cfg(cfg, tmp / f"paced{speed:g}", "fusion.explore_rate=0.05", "fusion.max_hold_s=30")
    session = replay_session(bcfg, paths, speed, deterministic=False, ledger=Ledger.memory())
    brain, replay = session.brain, session.replay
    assert brain is not None, "B5/B6 need the models on"
    lags: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        period = 0.01
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(period)
            lags.append((loop.time() - t - period) * 1e3)

    p = asyncio.create_task(probe())
    await replay.run()
    stop.set()
    await p
    during = list(brain.decision_latency_training_ms)
    idle = list(brain.decision_latency_ms)
    brain.close(save=False)
    return {"decision_ms": _pcts(idle), "decision_ms_while_training": _pcts(during), "loop_lag_ms": _pcts(lags)}


def run(cfg: Settings, data_dir: Path, quick: bool = False, out: Any = sys.stderr,
        extra_steps: tuple[tuple[str, Callable[[], dict[str, Any]]], ...] = ()) -> dict[str, Any]:
    """Every figure, one step after another; ``extra_steps`` come from the desk's side (B10, B12)."""
    paths = [data_dir / name for name in R1]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"bench needs the R1 recordings: missing {', '.join(missing)}")
    import asyncio
    import tempfile

    from models import inference_bench as model_bench

    report: dict[str, Any] = {"environment": environment(), "quick": quick}
    rss0 = _rss_mb()
    tmp = Path(tempfile.mkdtemp(prefix="tradedesk-bench-"))
    short = paths[:1] if quick else paths

    def paced() -> dict[str, Any]:
        speed = 50.0 if quick else 10.0
        r = asyncio.run(_paced(cfg, short, speed, tmp))
        return {f"B5_decision_ms_at_{speed:g}x": r["decision_ms"],
                f"B6_decision_ms_while_training_at_{speed:g}x": r["decision_ms_while_training"],
                "B6_ratio_p99": (round(r["decision_ms_while_training"]["p99"] / r["decision_ms"]["p99"], 2)
                                 if r["decision_ms_while_training"]["p99"] and r["decision_ms"]["p99"] else None),
                f"B9_loop_lag_ms_at_{speed:g}x": r["loop_lag_ms"]}

    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("ingest (B1, B2)", lambda: bench_ingest(cfg, paths, 1 if quick else 5)),
        ("naive baseline (B3)", lambda: bench_naive(cfg, paths, 100 if quick else 400)),
        ("backtest with models (B4, B5, B8)", lambda: bench_backtest(cfg, short, tmp)),
        ("paced replay (B5, B6, B9)", paced),
        ("model inference (B7)", lambda: {"B7": model_bench.run_b7(iters=100 if quick else 300)}),
        ("GPU (B13)", lambda: {"B13": model_bench.run_b13()}),
        *extra_steps,
    ]
    for name, step in steps:
        print(f"bench: {name} ...", file=out, flush=True)
        t0 = time.perf_counter()
        report.update(step())
        print(f"bench: {name} done in {time.perf_counter() - t0:.1f} s", file=out, flush=True)
    report["B11_rss_start_mb"] = round(rss0, 1)
    report["B11_rss_after_r1_mb"] = round(_rss_mb(), 1)
    return report

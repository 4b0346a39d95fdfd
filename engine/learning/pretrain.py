"""``tradedesk train``: offline pre-training, so the desk starts from models that learned.

- **Recordings** (tradedesk or Binance capture files): the desk's own learning loop runs
  over them at max speed — account positions, shadow positions, counterfactuals and the
  CNN's perfect moves train all three models, exactly as in a live session. The last
  ``training.validation_fraction`` of the market time is held out: the models that learned
  on the rest are evaluated there, frozen, beside fresh ones and the baselines (flat,
  buy-and-hold, random entries with the same trades), and those models are written to the
  desk's checkpoints.
- **Binance public-data dumps** (``<SYMBOL>-<tf>-<date>.csv`` klines and
  ``<SYMBOL>-aggTrades-<date>.csv`` trades, zipped or not, with or without a header row):
  bars and features are computed exactly as live (on bar close, from the past only), swing
  extrema are labelled in hindsight per timeframe and used only once confirmed, and the
  CNN is fitted on them (the other models need an order book). The last part of the
  labels is held out for an accuracy check, and a bar-by-bar out-of-sample run of the
  CNN's signal (fills at the closes, the taker fee both ways) is set against the same
  baselines.
"""

from __future__ import annotations

import csv
import io
import re
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TextIO

import numpy as np

from engine.core.events import NS_PER_MS, NS_PER_S, Bar, Trade
from engine.core.settings import Settings
from engine.market.bars import BarBuilder
from engine.market.features import BarFeatures
from models.common.schema import CNN_TIMEFRAMES, TIMEFRAMES

_KLINE_NAME = re.compile(r"^([A-Z0-9]+)-(1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d)-", re.IGNORECASE)
_AGG_NAME = re.compile(r"^([A-Z0-9]+)-aggTrades-", re.IGNORECASE)


class TrainInputError(ValueError):
    """A file that cannot be used for training, with the reason."""


@dataclass
class Series:
    """Per symbol and timeframe: bar close times (ns) and feature rows, ascending."""

    times: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    rows: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)
    closes: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    features: dict[tuple[str, str], BarFeatures] = field(default_factory=dict)

    def add(self, bar: Bar) -> None:
        key = (bar.symbol, bar.timeframe)
        feats = self.features.setdefault(key, BarFeatures())
        row = feats.update(bar)
        self.times.setdefault(key, []).append(bar.open_time + TIMEFRAMES[bar.timeframe] * NS_PER_S)
        self.rows.setdefault(key, []).append(row.copy())
        self.closes.setdefault(key, []).append(float(bar.close))

    def symbols(self) -> list[str]:
        return sorted({s for s, _ in self.times})

    def bar_count(self) -> int:
        return sum(len(v) for v in self.times.values())


def _open_text(path: Path) -> Iterator[TextIO]:
    """Yield text streams: one per CSV inside a zip, or the file itself."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.lower().endswith(".csv"):
                    with zf.open(name) as raw:
                        yield io.TextIOWrapper(raw, encoding="utf-8")
        return
    with path.open(encoding="utf-8") as fh:
        yield fh


def _rows(path: Path) -> Iterator[list[str]]:
    for fh in _open_text(path):
        for row in csv.reader(fh):
            if not row or not row[0].strip().lstrip("-").isdigit():
                continue  # header row or blank line
            yield row


def _time_ns(value: str) -> int:
    """Binance dumps stamp in ms, and in µs since 2025: tell them apart by size."""
    t = int(value)
    return t * 1000 if t > 10**15 else t * NS_PER_MS


def read_klines(path: Path, symbol: str, tf: str) -> Iterator[Bar]:
    for n, row in enumerate(_rows(path), 1):
        try:
            o, h, low, c, v = (Decimal(x) for x in row[1:6])
            trades = int(row[8])
            buy = Decimal(row[9])
        except (IndexError, ValueError, ArithmeticError) as exc:
            raise TrainInputError(f"{path}: row {n} is not a Binance kline row: {exc}") from None
        if not all(x.is_finite() and x >= 0 for x in (o, h, low, c, v, buy)) or min(o, h, low, c) <= 0:
            raise TrainInputError(f"{path}: row {n}: non-finite, zero or negative price/volume")
        yield Bar(symbol, tf, _time_ns(row[0]), o, h, low, c, v, buy, trades)


def read_agg_trades(path: Path, symbol: str) -> Iterator[Trade]:
    for n, row in enumerate(_rows(path), 1):
        try:
            price, qty = Decimal(row[1]), Decimal(row[2])
            maker = row[6].strip().lower() == "true"
            yield Trade(symbol, int(row[0]), price, qty, maker, _time_ns(row[5]), _time_ns(row[5]))
        except (IndexError, ValueError, ArithmeticError) as exc:
            raise TrainInputError(f"{path}: row {n} is not a Binance aggTrades row: {exc}") from None


def collect(cfg: Settings, paths: list[Path], out: TextIO = sys.stderr) -> Series:
    """Build bar feature series from kline and aggTrades dumps."""
    series = Series()
    for path in paths:
        if not path.is_file():
            raise TrainInputError(f"no such file: {path}")
        name = path.name
        if m := _KLINE_NAME.match(name):
            symbol, tf = m.group(1).upper(), m.group(2).lower()
            if tf not in TIMEFRAMES:
                raise TrainInputError(f"{path}: timeframe {tf} has no CNN head (use one of {', '.join(TIMEFRAMES)})")
            for bar in read_klines(path, symbol, tf):
                series.add(bar)
        elif m := _AGG_NAME.match(name):
            builder = BarBuilder(m.group(1).upper(), TIMEFRAMES, series.add)
            for t in read_agg_trades(path, m.group(1).upper()):
                builder.add_trade(t)
        else:
            raise TrainInputError(f"{path}: not a kline or aggTrades dump (recordings go through the learning loop)")
    return series


class Progress:
    """One progress bar on ``out`` per pass: ``update(fraction, note)``, then ``done()``."""

    def __init__(self, out: TextIO, label: str) -> None:
        self.out, self.label = out, label
        self.t0 = time.perf_counter()

    def update(self, frac: float, note: str = "") -> None:
        frac = min(max(frac, 0.0), 1.0)
        eta = (time.perf_counter() - self.t0) / max(frac, 1e-9) * (1 - frac)
        self.out.write(f"\r{self.label} [{'#' * int(frac * 30):<30}] {frac * 100:3.0f}% {note} eta {eta:4.0f}s")
        self.out.flush()

    def done(self) -> None:
        self.update(1.0)
        self.out.write("\n")
        self.out.flush()


#: Market time a recording needs for pre-training: enough to learn on and to hold out.
MIN_RECORDING_S = 300.0


def is_dump(path: Path) -> bool:
    return bool(_KLINE_NAME.match(path.name) or _AGG_NAME.match(path.name))


def train(cfg: Settings, paths: list[Path], epochs: int, out: TextIO = sys.stderr) -> dict[str, object]:
    """Pre-train on every input (dumps first, then recordings); returns the report."""
    for p in paths:
        if not p.is_file():
            raise TrainInputError(f"no such file: {p}")
    dumps = [p for p in paths if is_dump(p)]
    recordings = [p for p in paths if not is_dump(p)]
    rep: dict[str, object] = {}
    if dumps:
        rep["dumps"] = train_cnn(cfg, dumps, epochs, out)
    if recordings:
        rep["recordings"] = train_on_recordings(cfg, recordings, out)
    return rep


def train_on_recordings(cfg: Settings, paths: list[Path], out: TextIO = sys.stderr) -> dict[str, object]:
    """The learning loop over ``paths`` up to the held-out part, then the out-of-sample report."""
    from decimal import Decimal

    from engine.kernel import backtest_session
    from engine.learning.host import checkpoint_file, desk_checkpoints
    from engine.market.capture import capture_span
    from engine.runs.backtest import compare
    from engine.runs.walk_forward import evaluate_fold

    t0 = time.perf_counter()
    start, end = capture_span(paths)
    span_s = (end - start) / NS_PER_S
    if span_s < MIN_RECORDING_S:
        raise TrainInputError(
            f"the recordings hold {span_s:.0f} s of market time; pre-training needs at least {MIN_RECORDING_S:.0f} s "
            f"(it learns on the first {1 - cfg.training.validation_fraction:.0%} and holds out the rest)")
    cut = start + int((end - start) * (1 - cfg.training.validation_fraction))
    desk = desk_checkpoints(cfg)
    resume = cfg.models.load_checkpoints and any(checkpoint_file(desk, k, cfg.models.preset).exists()
                                                 for k in ("cnn", "dqn", "cob"))
    session = backtest_session(cfg, paths, checkpoints_from=desk if resume else None)
    bar = Progress(out, "train: learning loop")
    try:
        brain = session.brain
        if brain is None:
            raise TrainInputError("every model is switched off (models.enabled): nothing to train")
        steps = 20
        for i in range(1, steps + 1):
            session.replay.run_sync(stop_at_ns=start + (cut - start) * i // steps)
            brain.wait_for_training()
            bar.update(i / steps, f"steps {brain.training_steps()}")
        bar.done()
        learned_steps = brain.training_steps()
        updates = {k: dict(v) for k, v in brain.updates.items()}
        shadow = brain.summary_extra()["shadow"]
        saved = brain.host.save_checkpoints(desk)  # what the desk and --from-checkpoints load
        session.close()
        print("train: validation on the held-out part (the learned models, then fresh ones) ...", file=out)
        learned, rec, trades = evaluate_fold(cfg, paths, desk, cut, end + 1)
        fresh, _, _ = evaluate_fold(cfg, paths, None, cut, end + 1)
    finally:
        session.close()
    cmp = compare(Decimal(learned["net_pnl"]), rec.arm.tape, trades, cfg.general.seed)
    cmp.pop("_draws")
    return {
        "files": [p.name for p in paths],
        "market_s": round(span_s, 1),
        "trained_on_s": round((cut - start) / NS_PER_S, 1),
        "held_out_s": round((end - cut) / NS_PER_S, 1),
        "resumed_from_checkpoints": resume,
        "training_steps": learned_steps,
        "updates": updates,
        "shadow": shadow,
        "validation": {"learned": learned, "untrained": fresh, **cmp},
        "checkpoints": saved,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def train_cnn(cfg: Settings, paths: list[Path], epochs: int, out: TextIO = sys.stderr) -> dict[str, object]:
    """Label, build samples, fit, validate, save (kline / aggTrades dumps). Returns a report dict."""
    from engine.learning.host import checkpoint_path
    from models.cnn.cnn_agent import CNNAgent
    from models.cnn.perfect_moves import CNNSamples, build_cnn_samples, label_series
    from models.common.checkpoint import CheckpointError
    from models.common.device import select_device

    t0 = time.perf_counter()
    series = collect(cfg, paths, out)
    if series.bar_count() == 0:
        raise TrainInputError("no bars in the inputs: nothing to train on")
    min_bars = cfg.models.cnn_min_bars
    thresholds = cfg.training.swing_threshold
    all_samples = []
    labels_found: dict[str, int] = {}
    longest: dict[str, int] = {}
    for symbol in series.symbols():
        per_tf = {}
        labels = []
        for tf in CNN_TIMEFRAMES:
            key = (symbol, tf)
            if key not in series.times:
                continue
            times = np.asarray(series.times[key], np.int64)
            longest[f"{symbol} {tf}"] = len(times)
            per_tf[tf] = (times, np.stack(series.rows[key]))
            found = label_series(times, series.closes[key], thresholds.get(tf, 0.02), tf)
            labels += found
            labels_found[f"{symbol} {tf}"] = len(found)
        if not labels:
            continue
        now = max(int(t[0][-1]) for t in per_tf.values())  # everything here is in the past
        all_samples.append(build_cnn_samples(per_tf, labels, now, seed=cfg.general.seed, min_bars=min_bars))
    samples = [s for s in all_samples if len(s)]
    print("train: labels per timeframe: " + ", ".join(f"{k}={v}" for k, v in labels_found.items()), file=out)
    if not samples:
        need = 3 * min_bars
        if max(longest.values(), default=0) < need:
            raise TrainInputError(
                f"too little history: the longest series has {max(longest.values(), default=0)} bars "
                f"({', '.join(f'{k}: {v}' for k, v in longest.items())}); a swing needs at least {need} bars of one "
                f"timeframe (models.cnn_min_bars = {min_bars} before a head counts)")
        raise TrainInputError(
            "no confirmed swings: the data never moved by training.swing_threshold "
            f"({thresholds}); give more history or lower the thresholds")
    merged = CNNSamples(*(np.concatenate([getattr(s, f) for s in samples]) for f in
                          ("bars", "valid", "targets", "weights", "times")))
    # Hold out the last part by time: the accuracy check and the bar run use only that.
    cut = int(np.quantile(merged.times, 1 - cfg.training.validation_fraction))
    train_idx, val_idx = np.flatnonzero(merged.times < cut), np.flatnonzero(merged.times >= cut)
    part = CNNSamples(*(getattr(merged, f)[train_idx] for f in ("bars", "valid", "targets", "weights", "times")))
    device = select_device(cfg.models.device)
    agent = CNNAgent(cfg.models.preset, device, cfg.general.seed, name="CNN")
    path = checkpoint_path(cfg, "cnn")
    refused = ""
    if cfg.models.load_checkpoints and path.exists():
        try:
            agent.load(path)
        except CheckpointError as exc:  # as the desk does: say why, and start from a fresh model
            refused = str(exc)
            print(f"train: {refused}\ntrain: training a fresh CNN; the refused file goes to "
                  f"{path.parent / 'quarantine'} when this one is saved", file=out, flush=True)
    bar = Progress(out, "train CNN")
    losses = agent.fit(part, epochs=epochs, batch_size=cfg.training.batch_size,
                       progress=lambda done, total, loss: bar.update(done / total if total else 1.0,
                                                                     f"{done}/{total} loss "
                                                                     f"{'-' if loss is None else f'{loss:.4f}'}"))
    bar.done()
    validation = _validate_cnn(cfg, agent, merged, val_idx, series, cut)
    saved = agent.save(path, metrics={"final_loss": losses[-1] if losses else float("nan"),
                                      "samples": float(len(part)),
                                      "val_accuracy": float(str(validation["accuracy"] or 0.0))})
    return {"samples": len(merged), "trained_on": len(part), "held_out": len(val_idx), "labels": labels_found,
            "refused_checkpoint": refused,
            "epochs": epochs, "steps": agent.training_steps,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "validation": validation, "checkpoint": str(saved), "wall_s": round(time.perf_counter() - t0, 2)}


def _validate_cnn(cfg: Settings, agent: object, samples: object, idx: np.ndarray, series: Series,
                  cut: int) -> dict[str, object]:
    """Accuracy on the held-out labels beside always guessing the commonest label, and the
    CNN's signal traded bar by bar over the held-out bars against the baselines."""
    from engine.learning.fusion import cnn_score, decide
    from engine.runs import baselines
    from engine.runs.baselines import Tape, TapePoint, Trades
    from models.cnn.cnn_agent import CNNAgent
    from models.common.inputs import ModelInputs
    from models.common.schema import COB_INPUT, DQN_INPUT, WINDOW

    assert isinstance(agent, CNNAgent)
    bars, valid, targets = samples.bars[idx], samples.valid[idx], samples.targets[idx]  # type: ignore[attr-defined]
    correct = total = 0
    counts: dict[int, int] = {}
    for b, v, t in zip(bars, valid, targets, strict=True):
        k = int(np.flatnonzero(t >= 0)[0])
        pred = agent.predict(ModelInputs(b, v, np.zeros(COB_INPUT, np.float32), np.zeros(DQN_INPUT, np.float32)))
        head = pred.per_tf.get(CNN_TIMEFRAMES[k]) if pred.per_tf else None
        if head is None:
            continue
        total += 1
        correct += head.action == int(t[k])
        counts[int(t[k])] = counts.get(int(t[k]), 0) + 1
    out: dict[str, object] = {
        "labels": total, "accuracy": round(correct / total, 4) if total else None,
        "commonest_label_accuracy": round(max(counts.values()) / total, 4) if total else None,
    }
    # The bar run: the finest timeframe of the first symbol, from the cut on.
    sym = series.symbols()[0]
    tfs = [tf for tf in CNN_TIMEFRAMES if (sym, tf) in series.times]
    if not tfs:
        return out
    base = tfs[0]
    times = np.asarray(series.times[(sym, base)], np.int64)
    closes = series.closes[(sym, base)]
    f = cfg.fusion
    fee, notional = cfg.paper.taker_fee, cfg.trading.order_notional
    tape = Tape(fee, bool(cfg.paper.allow_short))
    per_tf = {tf: (np.asarray(series.times[(sym, tf)], np.int64), np.stack(series.rows[(sym, tf)])) for tf in tfs}
    pos: tuple[int, Decimal, Decimal, int] | None = None  # (side, entry price, qty, entry ts)
    net, durations = Decimal(0), []
    weights = dict(f.tf_weights)
    for i in np.flatnonzero(times >= cut):
        t, px = int(times[i]), Decimal(str(closes[i]))
        qty = (notional / px).quantize(Decimal("0.00001"))
        tape.add(TapePoint(t, px, qty, px, px))
        window = np.zeros((len(CNN_TIMEFRAMES), WINDOW, per_tf[base][1].shape[1]), np.float32)
        ok = np.zeros(len(CNN_TIMEFRAMES), bool)
        for k, tf in enumerate(CNN_TIMEFRAMES):
            if tf not in per_tf:
                continue
            ts, rows = per_tf[tf]
            j = int(np.searchsorted(ts, t, side="right"))
            if j >= cfg.models.cnn_min_bars:
                lo = max(0, j - WINDOW)
                window[k, WINDOW - (j - lo):] = rows[lo:j]
                ok[k] = True
        if not ok.any():
            continue
        p = agent.predict(ModelInputs(window, ok, np.zeros(COB_INPUT, np.float32), np.zeros(DQN_INPUT, np.float32)))
        score = cnn_score({tf: (tp.confidence, tp.probs) for tf, tp in (p.per_tf or {}).items()}, weights)
        side = None if pos is None else ("BUY" if pos[0] > 0 else "SELL")
        action = decide(score, side, f.open_threshold, f.close_threshold, bool(cfg.paper.allow_short))
        if pos is not None and f.max_hold_s > 0 and t - pos[3] > f.max_hold_s * NS_PER_S:
            action = "CLOSE"
        if pos is None and action in ("BUY", "SELL"):
            pos = (1 if action == "BUY" else -1, px, qty, t)
        elif pos is not None and action == "CLOSE":
            s, entry, q, t_in = pos
            net += (px - entry) * q * s - fee * (entry + px) * q
            durations.append(t - t_in)
            pos = None
    open_age = None
    if pos is not None and tape.points:
        s, entry, q, t_in = pos
        net += (tape.points[-1].mid - entry) * q * s - fee * entry * q
        open_age = tape.points[-1].ts - t_in
    trades = Trades(tuple(durations), open_age)
    draws = baselines.random_draws(tape, trades, 500, cfg.general.seed)
    rnd = baselines.random_summary(draws)
    out["bar_run"] = {
        "timeframe": base, "bars": len(tape.points), "trades": trades.count, "net_pnl": str(net),
        "fills": "at each bar's close, the taker fee on both sides (no book in a kline dump)",
        "baselines": {"flat": baselines.flat(), "buy_and_hold": baselines.buy_and_hold(tape), "random": rnd},
        "rank_vs_random": baselines.rank_vs_random(float(net), draws),
        "beats_random_p95": bool(trades.count) and net > Decimal(str(rnd.get("net_pnl_p95", "0"))),
    }
    return out


def iter_files(paths: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p])
    return out

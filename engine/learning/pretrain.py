"""``tradedesk train``: offline pre-training of the CNN on perfect moves.

Inputs: tradedesk / Binance capture recordings, and Binance's public-data dumps
(``<SYMBOL>-<tf>-<date>.csv`` kline files and ``<SYMBOL>-aggTrades-<date>.csv`` files,
zipped or not, with or without a header row). Bars are built (or read), features are
computed exactly as live (on bar close, from the past only), swing extrema are labelled
in hindsight per timeframe and used only once confirmed, and the CNN is fitted on them.
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
from engine.execution.ledger import Ledger
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
    """Build bar feature series from every input file."""
    series = Series()
    recordings: list[Path] = []
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
            recordings.append(path)
    if recordings:
        from engine.kernel import replay_session

        session = replay_session(cfg, recordings, None, mode="backtest", models=False, ledger=Ledger.memory())
        session.engine.on_bar_closed(series.add)
        session.replay.run_sync()
        session.close()
        print(f"train: replayed {session.replay.lines} lines from {len(recordings)} recording(s)", file=out)
    return series


def train_cnn(cfg: Settings, paths: list[Path], epochs: int, out: TextIO = sys.stderr) -> dict[str, object]:
    """Label, build samples, fit, save. Returns a report dict."""
    from engine.learning.host import checkpoint_path
    from models.cnn.cnn_agent import CNNAgent
    from models.cnn.perfect_moves import build_cnn_samples, label_series
    from models.common.device import select_device

    t0 = time.perf_counter()
    series = collect(cfg, paths, out)
    if series.bar_count() == 0:
        raise TrainInputError("no bars in the inputs: nothing to train on")
    thresholds = cfg.training.swing_threshold
    all_samples = []
    labels_found: dict[str, int] = {}
    for symbol in series.symbols():
        per_tf = {}
        labels = []
        for tf in CNN_TIMEFRAMES:
            key = (symbol, tf)
            if key not in series.times:
                continue
            times = np.asarray(series.times[key], np.int64)
            per_tf[tf] = (times, np.stack(series.rows[key]))
            found = label_series(times, series.closes[key], thresholds.get(tf, 0.02), tf)
            labels += found
            labels_found[f"{symbol} {tf}"] = len(found)
        if not labels:
            continue
        now = max(int(t[0][-1]) for t in per_tf.values())  # everything here is in the past
        all_samples.append(build_cnn_samples(per_tf, labels, now, seed=cfg.general.seed))
    samples = [s for s in all_samples if len(s)]
    print("train: labels per timeframe: " + ", ".join(f"{k}={v}" for k, v in labels_found.items()), file=out)
    if not samples:
        raise TrainInputError(
            "no confirmed swings: the data never moved by training.swing_threshold "
            f"({thresholds}); give more history or lower the thresholds")
    from models.cnn.perfect_moves import CNNSamples

    merged = CNNSamples(*(np.concatenate([getattr(s, f) for s in samples]) for f in
                          ("bars", "valid", "targets", "weights", "times")))
    device = select_device(cfg.models.device)
    agent = CNNAgent(cfg.models.preset, device, cfg.general.seed, name="CNN")
    path = checkpoint_path(cfg, "cnn")
    if cfg.models.load_checkpoints and path.exists():
        agent.load(path)
    start = time.perf_counter()

    def progress(done: int, total: int, loss: float | None) -> None:
        frac = done / total if total else 1.0
        bar = "#" * int(frac * 30)
        shown = f"{loss:.4f}" if loss is not None else "-"
        eta = (time.perf_counter() - start) / max(frac, 1e-9) * (1 - frac)
        out.write(f"\rtrain CNN [{bar:<30}] {done}/{total} loss {shown} eta {eta:4.0f}s")
        out.flush()

    losses = agent.fit(merged, epochs=epochs, batch_size=cfg.training.batch_size, progress=progress)
    out.write("\n")
    saved = agent.save(path, metrics={"final_loss": losses[-1] if losses else float("nan"),
                                      "samples": float(len(merged))})
    return {"samples": len(merged), "labels": labels_found, "epochs": epochs, "steps": agent.training_steps,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "checkpoint": str(saved), "wall_s": round(time.perf_counter() - t0, 2)}


def iter_files(paths: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p])
    return out

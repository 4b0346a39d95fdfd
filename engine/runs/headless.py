"""The headless adapter: run a feed through the engine with a periodic status line,
then write the summary JSON and (optionally) the bars as CSV."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from engine.core.engine import Engine
from engine.core.events import NS_PER_MS
from models.common.schema import TIMEFRAMES

log = logging.getLogger(__name__)


def status_line(engine: Engine) -> str:
    snap = engine.snapshot()
    parts = [snap.mode]
    for v in snap.symbols:
        price = f"{v.last_price:.2f}" if v.last_price is not None else "-"
        parts.append(f"{v.display} {price} {v.book_state} trades={v.trades}")
    parts.append(f"msgs={engine.messages} fills={len(engine.fills)} pnl={engine.portfolio.realised_pnl:+.4f}")
    return " | ".join(parts)


async def status_loop(engine: Engine, every_s: float = 5.0, out: TextIO = sys.stderr) -> None:
    while True:
        await asyncio.sleep(every_s)
        print(status_line(engine), file=out, flush=True)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def export_bars(engine: Engine, out_dir: Path) -> list[Path]:
    """One CSV per symbol and timeframe: ``open_time_ms,open,high,low,close,volume,trades``.

    Includes the bar still open at the end of the data (it has all its trades so far).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for sym, st in engine.symbols.items():
        for tf in TIMEFRAMES:
            bars = st.bars.all_bars(tf)
            if not bars:
                continue
            path = out_dir / f"{sym.lower()}_{tf}.csv"
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["open_time_ms", "open", "high", "low", "close", "volume", "trades"])
                for b in bars:
                    w.writerow([b.open_time // NS_PER_MS, b.open, b.high, b.low, b.close, b.volume, b.trades])
            written.append(path)
    return written


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

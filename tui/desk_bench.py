"""The desk's own benchmark figures (BENCH.md B10 and B12), each in a fresh process.

``tradedesk bench`` runs these as subprocesses (:func:`bench_desk`), so every figure
starts from a cold interpreter:

- ``python -m tui.desk_bench startup DATA_DIR``: B12, process start -> the first frame
  of the desk rendered, with the three models loaded. The parent passes its clock at
  spawn in ``TRADEDESK_BENCH_T0`` so interpreter start-up and imports count too.
- ``python -m tui.desk_bench ui DATA_DIR --seconds S --hz H``: B10, the R1 replay at 1x
  for S seconds in a headless desk refreshing at H Hz. ``--hz 0`` runs the same replay
  with no desk at all: the difference in process CPU time is what the desk costs.

Each prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.runs.benchmarks import R1  # the recordings every bench figure uses

if TYPE_CHECKING:
    from textual.app import App

    from engine.core.settings import Settings
    from engine.kernel import Session
    from tui.app import DeskApp


def _settings(tmp: Path, *extra: str) -> Settings:
    from engine.core import settings

    return settings.load(search=False, overrides=[
        f'general.data_dir="{tmp}"', "models.load_checkpoints=false", "models.save_checkpoints=false",
        'models.device="cpu"', *extra,
    ])


def _desk_app(cfg: Settings, session: Session, on_mounted: Callable[[App[int]], None]) -> DeskApp:
    """The real desk app whose desk screen calls ``on_mounted(app)`` once it is mounted."""
    from tui.app import DeskApp
    from tui.screens.desk import DeskScreen

    class ProbedDesk(DeskScreen):
        def on_mount(self) -> None:  # runs before DeskScreen.on_mount (Textual calls both)
            on_mounted(self.app)

    return DeskApp(cfg, session.engine, session.replay, desk=ProbedDesk(cfg, session.engine))


def startup(data: Path) -> dict[str, Any]:
    t0 = float(os.environ.get("TRADEDESK_BENCH_T0", "0")) or None
    from engine.kernel import replay_session

    cfg = _settings(Path(tempfile.mkdtemp(prefix="tradedesk-b12-")))
    session = replay_session(cfg, [data / n for n in R1], 1.0)
    models_at = time.time()
    out: dict[str, Any] = {}

    def mounted(app: App[int]) -> None:
        def first_frame() -> None:  # after the first snapshot has been applied and painted
            out["first_frame_s"] = round(time.time() - t0, 3) if t0 else None
            out["models_loaded_s"] = round(models_at - t0, 3) if t0 else None
            out["models"] = len(session.brain.agents) if session.brain is not None else 0
            app.exit(0)

        app.call_after_refresh(first_frame)

    _desk_app(cfg, session, mounted).run(headless=True, size=(160, 48))
    session.close()
    return out


def ui(data: Path, seconds: float, hz: float) -> dict[str, Any]:
    from engine.kernel import replay_session

    extra = [f"ui.refresh_hz={hz:g}"] if hz > 0 else []
    cfg = _settings(Path(tempfile.mkdtemp(prefix="tradedesk-b10-")), *extra)
    session = replay_session(cfg, [data / n for n in R1], 1.0)
    engine, replay = session.engine, session.replay
    out: dict[str, Any] = {"hz": hz, "seconds": seconds}
    if hz <= 0:
        async def headless() -> None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(replay.run(), seconds)

        c0, w0 = time.process_time(), time.perf_counter()
        asyncio.run(headless())
        out.update(cpu_s=time.process_time() - c0, wall_s=time.perf_counter() - w0, refreshes=0)
    else:
        marks: dict[str, float] = {}

        def mounted(app: App[int]) -> None:
            marks["c0"], marks["w0"] = time.process_time(), time.perf_counter()
            app.set_timer(seconds, lambda: app.exit(0))

        app = _desk_app(cfg, session, mounted)
        app.run(headless=True, size=(160, 48))
        out.update(cpu_s=time.process_time() - marks["c0"], wall_s=time.perf_counter() - marks["w0"])
        stats = app.desk.refresh_stats()
        out.update(refreshes=int(stats["n"]), refresh_handler_ms_mean=round(stats["mean_ms"], 3),
                   refresh_handler_ms_p95=round(stats["p95_ms"], 3), chart_draws=int(stats["chart_draws"]),
                   chart_draw_ms_mean=round(stats["chart_ms"], 3))
    out["messages"] = engine.messages
    session.close()
    return out


def _desk_probe(*args: str, timeout: float = 300.0) -> dict[str, Any]:
    """One ``python -m tui.desk_bench`` run in a fresh process."""
    env = {**os.environ, "TRADEDESK_BENCH_T0": repr(time.time())}
    r = subprocess.run([sys.executable, "-m", "tui.desk_bench", *args], env=env, capture_output=True, text=True,  # noqa: S603 - our own module
                       timeout=timeout, check=False)
    if r.returncode != 0 or not r.stdout.strip():
        return {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]}
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def bench_desk(data_dir: Path, quick: bool) -> dict[str, Any]:
    """B10 (the desk's CPU cost at 4 and 10 Hz over the engine alone, R1 at 1x) and B12 (start-up)."""
    starts = [_desk_probe("startup", str(data_dir)) for _ in range(1 if quick else 3)]
    firsts = sorted(s["first_frame_s"] for s in starts if s.get("first_frame_s") is not None)
    out: dict[str, Any] = {
        "B12_first_frame_s": firsts[len(firsts) // 2] if firsts else None,
        "B12_models_loaded_s": statistics.median(s["models_loaded_s"] for s in starts if "models_loaded_s" in s)
        if firsts else None,
        "B12_runs": len(starts),
        "B12_target_s": 3.0,
    }
    if not firsts:
        out["B12_error"] = starts[0].get("error")
    seconds = "6" if quick else "30"
    base = _desk_probe("ui", str(data_dir), "--seconds", seconds, "--hz", "0")
    out["B10_engine_only"] = base
    for hz in ("4",) if quick else ("4", "10"):
        r = _desk_probe("ui", str(data_dir), "--seconds", seconds, "--hz", hz)
        if "error" in r or "error" in base:
            out[f"B10_at_{hz}hz"] = {"error": r.get("error") or base.get("error")}
            continue
        ui_cpu = r["cpu_s"] - base["cpu_s"] * r["wall_s"] / base["wall_s"]
        out[f"B10_at_{hz}hz"] = {
            "ui_cpu_pct_of_one_core": round(100 * ui_cpu / r["wall_s"], 1),
            "ui_cpu_ms_per_refresh": round(1000 * ui_cpu / r["refreshes"], 2) if r["refreshes"] else None,
            **{k: r[k] for k in ("refreshes", "refresh_handler_ms_mean", "refresh_handler_ms_p95", "chart_draws",
                                 "chart_draw_ms_mean", "cpu_s", "wall_s")},
        }
    out["B10_target_pct_at_4hz"] = 15
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tui.desk_bench")
    p.add_argument("what", choices=("startup", "ui"))
    p.add_argument("data", type=Path, help="folder with the R1 recordings")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--hz", type=float, default=4.0)
    a = p.parse_args(argv)
    result = startup(a.data) if a.what == "startup" else ui(a.data, a.seconds, a.hz)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

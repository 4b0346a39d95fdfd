"""``tradedesk backtest``: the full engine over recordings at max speed, then a report.

Models, fusion, paper fills and training on close all run, on the recorded clock, so
the same files and seed give the same report.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.core.engine import Engine
from engine.core.events import NS_PER_S, PositionClosed


class EquityRecorder:
    """Realised equity after every closed position."""

    def __init__(self, engine: Engine) -> None:
        self.start = engine.settings.paper.starting_balance
        self.points: list[tuple[int, Decimal]] = []
        self.engine = engine
        engine.bus.on(PositionClosed, self._on_closed)

    def _on_closed(self, ev: PositionClosed) -> None:
        self.points.append((ev.exit_ts, self.start + self.engine.portfolio.realised_pnl))


def report(engine: Engine, equity: EquityRecorder, summary: dict[str, Any]) -> dict[str, Any]:
    closed = engine.portfolio.closed
    wins = [c for c in closed if c.realised_pnl > 0]
    gross = sum((c.realised_pnl + c.fees for c in closed), Decimal(0))
    out: dict[str, Any] = {
        "positions_closed": len(closed),
        "wins": len(wins),
        "win_rate": round(len(wins) / len(closed), 4) if closed else None,
        "pnl_before_fees": str(gross),
        "fees": str(engine.portfolio.fees),
        "pnl_after_fees": str(engine.portfolio.realised_pnl),
        "open_positions": len(engine.portfolio.positions),
        "fills": len(engine.fills),
        "decisions": summary.get("decisions"),
        "attribution": summary.get("attribution", {}),
        "training_steps": summary.get("training_steps"),
        "rewards": summary.get("rewards"),
        "equity": [[ts, str(v)] for ts, v in equity.points],
        "replay_x_realtime": None,
    }
    return out


def render(rep: dict[str, Any], span_s: float | None, width: int = 100, height: int = 18) -> str:
    """A text report with the equity curve drawn by plotext."""
    import plotext as plt

    lines = [
        f"positions closed {rep['positions_closed']}  wins {rep['wins']}  win rate "
        f"{rep['win_rate'] if rep['win_rate'] is not None else '-'}",
        f"PnL before fees {rep['pnl_before_fees']}  fees {rep['fees']}  PnL after fees {rep['pnl_after_fees']}",
        f"fills {rep['fills']}  decisions {rep['decisions']}  open positions {rep['open_positions']}",
        f"training steps {rep['training_steps']}  rewards {rep['rewards']}",
    ]
    if rep["replay_x_realtime"]:
        lines.append(f"speed {rep['replay_x_realtime']:.1f}x real time")
    for model, a in sorted(rep["attribution"].items()):
        lines.append(f"  {model.upper():4} positions {int(a['positions'])}  weighted PnL {a['pnl']:+.4f}")
    if len(rep["equity"]) >= 2:
        t0 = rep["equity"][0][0]
        xs = [(t - t0) / NS_PER_S / 60 for t, _ in rep["equity"]]
        ys = [float(v) for _, v in rep["equity"]]
        fig = plt.figure  # plotext 6: one figure object, cleared and drawn on
        fig.clear()
        fig.plot_size(width, height)
        fig.theme("colorless")  # plain text: the report also goes to files and pipes
        curve = fig.signal(xs, ys, marker="braille")
        curve.lines()
        fig.draw(curve)
        fig.title("realised equity")
        fig.label("minutes since the first close", "x")
        lines.append(plt.uncolorize(fig.build().string()))
    else:
        lines.append("(fewer than two closed positions: no equity curve)")
    _ = span_s
    return "\n".join(lines)

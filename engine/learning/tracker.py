"""The signal-position tracker (seed 002's SignalPositionTracker): which models opened a
position, with what weight, on what inputs; handed back when the position closes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.core.events import Contribution, PositionClosed

if TYPE_CHECKING:
    from models.common.base_agent import Experience
    from models.common.inputs import ModelInputs

#: Automatic orders whose fill has not come yet (latency model); older ones are forgotten.
MAX_OPENING = 64


@dataclass
class OpenContext:
    """What the models saw when a position was opened."""

    decision_id: int | None
    inputs: ModelInputs
    contributions: tuple[Contribution, ...]
    action: int  # the position's side as an action index
    experiences: dict[str, Experience]  # per credited model, begun when the decision was made
    credits: dict[str, float]  # per model: how much its own signal pushed the decision this way, [0, 1]
    manual: bool = False
    exploring: bool = False  # an exploratory entry (held at least the minimum before closing)


class SignalPositionTracker:
    """Contexts of orders on their way (by decision id), of open positions (by position id),
    and each model's credited PnL of the positions it opened (PnL × its credit)."""

    def __init__(self) -> None:
        self._opening: dict[int, OpenContext] = {}
        self._open: dict[int, OpenContext] = {}
        self.attribution: dict[str, dict[str, float]] = {}

    def expect(self, ctx: OpenContext) -> None:
        """An automatic order went out for decision ``ctx.decision_id``; its fill opens the position."""
        assert ctx.decision_id is not None
        self._opening[ctx.decision_id] = ctx
        while len(self._opening) > MAX_OPENING:
            self._opening.pop(next(iter(self._opening)))

    def forget(self, decision_id: int) -> None:
        self._opening.pop(decision_id, None)

    def opened(self, position_id: int, decision_id: int) -> None:
        """A position was opened by a decision's order (nothing happens for unknown decisions)."""
        ctx = self._opening.pop(decision_id, None)
        if ctx is not None:
            self._open[position_id] = ctx

    def track(self, position_id: int, ctx: OpenContext) -> None:
        """A position opened by hand."""
        self._open[position_id] = ctx

    def context(self, position_id: int) -> OpenContext | None:
        """The context of a position still open."""
        return self._open.get(position_id)

    def closed(self, ev: PositionClosed) -> OpenContext | None:
        """The context of a position that closed (None when no model opened it), with the
        PnL attributed to its contributors by weight."""
        ctx = self._open.pop(ev.position_id, None)
        if ctx is None:
            return None
        for model, credit in ctx.credits.items():
            if credit <= 0:
                continue
            a = self.attribution.setdefault(model, {"positions": 0, "pnl": 0.0, "credit": 0.0})
            a["positions"] += 1
            a["pnl"] += float(ev.realised_pnl) * credit
            a["credit"] += credit
        return ctx

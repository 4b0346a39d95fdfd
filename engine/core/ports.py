"""The small typed doors between the engine and what plugs into it.

- :class:`ModelsPort`: what the engine calls on its models (the brain) — market hooks,
  toggles and status. The engine never imports the learning package; it holds whatever
  the kernel attached that has this shape.
- :class:`DeskPort`: all the desk may do with an engine — read a snapshot, send a
  command, confirm live trading — so "the screen never reads engine internals" is a
  fact mypy checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from engine.core.events import Bar, Command, MarketData
    from engine.core.snapshot import DeskSnapshot
    from engine.market.symbol_state import SymbolState


class ModelsPort(Protocol):
    """The models of one engine, as the engine sees them."""

    @property
    def device_label(self) -> str: ...

    def on_market(self, st: SymbolState, ev: MarketData) -> None: ...

    def on_bar(self, st: SymbolState, bar: Bar, row: np.ndarray) -> None: ...

    def toggle(self, key: str, enabled: bool | None) -> None: ...

    def status(self) -> list[dict[str, object]]: ...

    def note(self) -> str: ...

    def training_steps(self) -> dict[str, int]: ...

    def reward_stats(self) -> dict[str, Any]: ...

    def summary_extra(self) -> dict[str, Any]: ...

    def close(self, save: bool = True) -> dict[str, str]: ...


class DeskPort(Protocol):
    """What the desk may do with an engine."""

    def snapshot(self) -> DeskSnapshot: ...

    def send(self, cmd: Command) -> None:
        """Queue a command and run it at once (so it applies while a replay is paused)."""
        ...

    def confirm_live(self, typed: str) -> bool: ...

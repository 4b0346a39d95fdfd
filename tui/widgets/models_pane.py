"""Models pane: one column per model, one row per status field, updated cell by cell.

The engine's model status is a dict per model whose keys depend on the model (the DQN
has an epsilon, the CNN does not). The fields a trader watches come first, in a fixed
order, some combined into one cell (loss and its 5-step average); every other key a
model reports follows under its own name. Nothing is invented: a field a model does
not report shows as "—" for that model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

from tui.format import NONE, compact, spark_text
from tui.widgets.cached import CachedStatic

NAME_KEYS = ("name", "key", "model", "id")
#: Width of one model's column; long values (a GPU name) are cut, the header has them whole.
MODEL_COL_WIDTH = 13
#: Counters (predictions, latency) change every refresh; repainting the table for them
#: once a second is plenty. A toggle or a state change shows at the next refresh.
COUNTER_INTERVAL_S = 1.0


def _first(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None


def _on(d: dict[str, Any]) -> Text | None:
    on = _first(d, "enabled", "active", "on")
    failing = d.get("failing")
    if failing:
        return Text(f"FAILING: {failing}", style="bold red")
    if on is None:
        return None
    return Text("ON" if on else "off", style="green" if on else "yellow")


def _state(d: dict[str, Any]) -> Text | None:
    state = d.get("state")
    if state is None:
        return None
    return Text(str(state), style="green" if str(state) == "trained" else "yellow")


def _signal(d: dict[str, Any]) -> Text | None:
    sig = d.get("signal")
    if sig is None:
        return None
    text = str(sig)
    return Text(text, style="green" if text.startswith("BUY") else "red" if text.startswith("SELL") else "")


def _loss(d: dict[str, Any]) -> Text | None:
    last, ma = _first(d, "last_loss", "loss"), _first(d, "loss_ma5", "loss_ma")
    if last is None and ma is None:
        return None
    fmt = (lambda x: NONE if x is None else f"{x:.3g}")  # noqa: E731 - a tiny local formatter
    return Text(f"{fmt(last)}/{fmt(ma)}")


def _trend(d: dict[str, Any]) -> Text | None:
    hist = _first(d, "loss_history", "losses")
    return Text(spark_text(list(hist)), style="cyan") if isinstance(hist, (list, tuple)) and hist else None


def _steps(d: dict[str, Any]) -> Text | None:
    steps, skipped = _first(d, "training_steps", "steps"), d.get("skipped_updates")
    if steps is None:
        return None
    text = compact(steps)
    if skipped:
        return Text.assemble(text, (f" ({compact(skipped)} skip)", "yellow"))
    return Text(text)


def _shadow(d: dict[str, Any]) -> Text | None:
    trades = d.get("shadow_trades")
    if trades is None:
        return None
    net = float(d.get("shadow_net_pnl") or 0.0)
    return Text(f"{trades}t {d.get('shadow_wins', 0)}w {net:+.2f}", style="green" if net > 0 else "red" if net < 0 else "")


def _shadow_rank(d: dict[str, Any]) -> Text | None:
    rank = d.get("shadow_rank")
    if rank is None:
        return None
    return Text(f"beats {float(rank):.0f}% rnd", style="green" if float(rank) >= 95 else "")


def _weight(d: dict[str, Any]) -> Text | None:
    w = d.get("fusion_weight")
    if w is None:
        return None
    mult = float(d.get("record_multiplier") or 1.0)
    style = "green" if mult > 1.05 else "red" if mult < 0.95 else ""
    return Text(f"{float(w):.2f} ×{mult:.2f}", style=style)  # the weight now, its record multiplier


_SOURCES = (("account", "acct"), ("shadow", "shdw"), ("counterfactual", "cf"), ("label", "pm"))


def _updates(d: dict[str, Any]) -> Text | None:
    ups = d.get("updates")
    if not isinstance(ups, dict) or not ups:
        return None
    return Text(" ".join(f"{short}{compact(ups[k])}" for k, short in _SOURCES if ups.get(k)))


def _plain(*keys: str) -> Callable[[dict[str, Any]], Text | None]:
    def get(d: dict[str, Any]) -> Text | None:
        v = _first(d, *keys)
        return None if v is None else Text(compact(v))

    return get


#: The row labels' column; every label below fits it.
LABEL_WIDTH = 11

#: (row label, status keys it shows, how). The order is the display order.
PRIMARY: tuple[tuple[str, tuple[str, ...], Callable[[dict[str, Any]], Text | None]], ...] = (
    ("on", ("enabled", "active", "on", "failing"), _on),
    ("state", ("state",), _state),
    ("signal", ("signal",), _signal),
    ("device", ("device",), _plain("device")),
    ("params", ("params", "parameters"), _plain("params", "parameters")),
    ("predictions", ("predictions",), _plain("predictions")),
    ("latency ms", ("last_latency_ms", "latency_ms"), _plain("last_latency_ms", "latency_ms")),
    ("loss / 5-MA", ("last_loss", "loss", "loss_ma5", "loss_ma"), _loss),
    ("loss trend", ("loss_history", "losses"), _trend),
    ("train steps", ("training_steps", "steps", "skipped_updates"), _steps),
    ("learned", ("updates",), _updates),
    ("shadow", ("shadow_trades", "shadow_wins", "shadow_net_pnl"), _shadow),
    ("shadow rank", ("shadow_rank",), _shadow_rank),
    ("weight", ("fusion_weight", "record_multiplier"), _weight),
    ("epsilon", ("epsilon",), _plain("epsilon")),
    ("last reward", ("last_reward", "reward"), _plain("last_reward", "reward")),
)
_CONSUMED = {k for _, keys, _ in PRIMARY for k in keys} | set(NAME_KEYS)
_ORDER = {label: i for i, (label, _, _) in enumerate(PRIMARY)}


def model_name(d: dict[str, Any], index: int) -> str:
    for k in NAME_KEYS:
        if isinstance(d.get(k), str):
            return str(d[k])
    return f"model {index + 1}"


def status_cells(d: dict[str, Any]) -> dict[str, Text]:
    """Row label -> cell for one model's status dict (only the fields it reports)."""
    out: dict[str, Text] = {}
    for label, _, get in PRIMARY:
        cell = get(d)
        if cell is not None:
            out[label] = cell
    for key, value in d.items():
        if key not in _CONSUMED:
            out[key.replace("_", " ")] = Text(compact(value))
    return out


def _row_order(label: str) -> tuple[int, str]:
    return (_ORDER.get(label, len(_ORDER)), label)


class ModelsPane(Vertical):
    """Per-model status; shows the engine's note plainly when no model is loaded."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._columns: list[str] = []
        self._rows: list[str] = []
        self._cells: dict[tuple[str, str], Text] = {}
        self._state_key: object = None
        self._last_update = 0.0
        self.updates = 0

    def compose(self) -> ComposeResult:
        yield CachedStatic("", id="models-note")
        table: DataTable[Text] = DataTable(id="models-table", cursor_type="none", show_cursor=False)
        table.display = False
        yield table

    def show(self, models: tuple[dict[str, object], ...], note: str) -> None:
        note_widget = self.query_one("#models-note", CachedStatic)
        table = self.query_one("#models-table", DataTable)
        if not models:
            note_widget.display = True
            note_widget.show(Text(note or "no models loaded: no automatic decisions", style="yellow"))
            table.display = False
            return
        note_widget.display = bool(note)
        if note:
            note_widget.show(Text(note, style="yellow"))
        table.display = True
        state_key = tuple(
            (model_name(dict(d), i), d.get("enabled"), d.get("state"), d.get("failing"), d.get("training_steps"))
            for i, d in enumerate(models)
        )
        now = time.monotonic()
        if state_key == self._state_key and now - self._last_update < COUNTER_INTERVAL_S:
            return
        self._state_key, self._last_update = state_key, now
        self.updates += 1
        if not self._columns:
            table.add_column("", key="__field__", width=LABEL_WIDTH)
        values: dict[tuple[str, str], Text] = {}
        for i, d in enumerate(models):
            name = model_name(d, i)
            if name not in self._columns:
                self._columns.append(name)
                table.add_column(name.upper(), key=name, width=MODEL_COL_WIDTH, default=Text(""))
            for label, cell in status_cells(dict(d)).items():
                values[(label, name)] = cell
        new_rows = sorted({label for label, _ in values} - set(self._rows), key=_row_order)
        for label in new_rows:
            self._rows.append(label)
            table.add_row(Text(label, style="dim"), *([Text("")] * len(self._columns)), key=label)
        if new_rows and self._rows != sorted(self._rows, key=_row_order):
            # A field that appeared later still goes to its place in the display order.
            self._rows.sort(key=_row_order)
            table.sort("__field__", key=lambda t: _row_order(t.plain))
        for label in self._rows:
            for name in self._columns:
                new = values.get((label, name), Text(NONE, style="dim"))
                if self._cells.get((label, name)) != new:
                    self._cells[(label, name)] = new
                    table.update_cell(label, name, new)

"""The desk: every pane over one engine, refreshed from an immutable snapshot.

The screen never reads engine internals and never does work per market message: it
holds the engine as a :class:`~engine.core.ports.DeskPort` (snapshot, send a command,
confirm live), so mypy checks that it reads nothing else. A timer pulls a snapshot at
``ui.refresh_hz`` and applies it inside one ``batch_update()``; each pane decides for
itself whether anything changed. Keys turn into engine commands, which run at once
(``DeskPort.send``) so they also apply while a replay is paused or finished.

The screen's state is declared as reactives: the snapshot on screen (its watcher applies
it), whether the exchange is unreachable and whether a replay runs (``bindings=True``:
the keys that depend on them come and go in the footer), and the feed's status, which the
app sets when its feed worker ends (attributes down). What the app decides flows up as a
message (:class:`DeskScreen.SampleReplayRequested`). What each key does is said once, in
:attr:`DeskScreen.BINDINGS`: the footer label and, as the tooltip, the help text.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.keys import format_key
from textual.message import Message
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import Footer

from engine.core.events import (
    ClosePosition,
    Command,
    ManualOrder,
    Panic,
    PauseReplay,
    SetAutoTrading,
    SetOrderSize,
    SetTraining,
    Side,
    ToggleModel,
)
from engine.core.snapshot import DeskSnapshot
from tui import format as fmt
from tui.screens.dialogs import ConfirmLive, HelpScreen
from tui.widgets.charts import PriceChart, SecondsChart
from tui.widgets.header import Banner, DeskHeader, is_live, primary_view, quote_of
from tui.widgets.logs import EventLog
from tui.widgets.models_pane import ModelsPane
from tui.widgets.positions_pane import PositionsPane
from tui.widgets.sparks import MarketSparks

if TYPE_CHECKING:
    from engine.core.ports import DeskPort
    from engine.core.settings import Settings

log = logging.getLogger(__name__)

#: Binding ids are "desk.<name>" where <name> is the key's name in settings [keys].
KEY_PREFIX = "desk."


class KeyHelp(NamedTuple):
    """One desk key as it applies now: how it is shown, its footer label, its help text."""

    keys: str
    label: str
    help: str


class FeedStatus(NamedTuple):
    """A line for the banner about the feed: its text and "info" or "alert" ("" = none)."""

    text: str = ""
    level: str = ""


TRAINING_WAIT = ("waiting for the first training event (models train on closed positions, their shadow "
                 "positions, counterfactual probes and confirmed perfect moves)")

PANES = [
    "header: price, session change, spread, mode, trading state, auto, training, order size, device; "
    "then each stream's book state and the age of its last message",
    "main chart: candles with executed trades only (▲ buy ▼ sell ◆ both)",
    "1s chart: every signal, solid when executed, hollow when not",
    "numbers from a book that is not LIVE are dimmed; alerts show in the top banner",
    "tab focuses the tables and logs to scroll them; the desk keys work wherever the focus is",
]


class DeskScreen(Screen[None]):
    """All panes of the desk; keys send engine commands."""

    #: The one source of what each key does: the footer shows the description, the help
    #: screen the tooltip (after the settings keymap), and a test holds the key tables
    #: of README.md and docs/desk.md to both (:func:`key_table`).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("b", "order('BUY')", "Buy", id="desk.buy",
                tooltip="buy the order size at market (manual); when short, close the short instead"),
        Binding("s", "order('SELL')", "Sell", id="desk.sell",
                tooltip="sell the order size at market; when long, close the long instead; "
                        "when flat this opens a short (paper, paper.allow_short)"),
        Binding("c", "close_position", "Close", id="desk.close", tooltip="close the open position at market"),
        Binding("x", "panic", "Panic", id="desk.panic", tooltip="flatten every position and HALT trading"),
        Binding("a", "auto", "Auto", id="desk.auto", tooltip="automatic trading from fused model decisions on/off"),
        Binding("1", "toggle_model('cnn')", "CNN", id="desk.toggle_cnn", show=False,
                tooltip="CNN model on/off (takes effect at the next decision)"),
        Binding("2", "toggle_model('dqn')", "DQN", id="desk.toggle_dqn", show=False,
                tooltip="DQN model on/off (takes effect at the next decision)"),
        Binding("3", "toggle_model('cob')", "COB", id="desk.toggle_cob", show=False,
                tooltip="COB (order book) model on/off (takes effect at the next decision)"),
        Binding("t", "training", "Train", id="desk.training", show=False,
                tooltip="training on closed positions on/off"),
        Binding("plus", "size(1)", "Size+", id="desk.size_up", show=False,
                tooltip="order size up by trading.notional_step (never above risk.max_order_notional)"),
        Binding("minus", "size(-1)", "Size-", id="desk.size_down", show=False,
                tooltip="order size down by trading.notional_step (never below one step)"),
        Binding("space", "pause", "Pause", id="desk.pause",
                tooltip="pause/resume a replay (shown only while a replay runs)"),
        Binding("r", "sample_replay", "Sample replay", id="desk.sample_replay",
                tooltip="only while the live exchange cannot be reached: open the sample replay (tradedesk demo)"),
        Binding("question_mark", "help", "Help", id="desk.help",
                tooltip="the keys as mapped, and the UI's measured refresh cost"),
        Binding("q", "app.request_quit", "Quit", id="desk.quit",
                tooltip="quit; asks first when a position is open (y quits, n/esc stays)"),
    ]

    # Nothing is focused at start: every key goes to the desk. Tab focuses the tables and
    # logs so they can be scrolled from the keyboard.
    AUTO_FOCUS = None

    snap: var[DeskSnapshot | None] = var(None, init=False, always_update=True)
    """The engine snapshot on screen; setting it applies it to every pane (:meth:`watch_snap`).
    Every snapshot is new (always_update: no field-by-field comparison at 10 Hz)."""
    feed_status: var[FeedStatus] = var(FeedStatus(), init=False)
    """How the feed ended, for the banner: set by the app, which owns the feed worker
    (attributes down), and by the desk itself when a replay finishes."""
    offline: var[bool] = var(False, init=False, bindings=True)
    """The live exchange cannot be reached: the sample-replay key applies."""
    replay_running: var[bool] = var(False, init=False, bindings=True)
    """A replay that has not finished (paused or not): the pause key applies."""
    replay_done: var[bool] = var(False, init=False)
    """The replay's data has ended; the desk stays open for review."""

    def __init__(self, cfg: Settings, port: DeskPort) -> None:
        super().__init__()
        self.cfg = cfg
        self.port = port
        self.refresh_ms: deque[float] = deque(maxlen=600)
        self.refreshes = 0
        self._keys: dict[str, KeyHelp] | None = None
        self._charts: list[PriceChart | SecondsChart] = []
        self._live_asked = False

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Banner("", fixed_size=True, id="banner")
        yield DeskHeader("", fixed_size=True, id="header")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield PriceChart(id="main-chart")
                yield SecondsChart(id="mini-chart")
                yield MarketSparks(id="sparks")
                yield EventLog(TRAINING_WAIT, id="training-log", max_lines=200)
            with Vertical(id="right"):
                yield PositionsPane(id="positions")
                yield ModelsPane(id="models")
                yield EventLog("waiting for the first engine event (book sync, orders, signals)", id="signal-log")
        yield Footer()

    def on_mount(self) -> None:
        titles = {
            "#main-chart": f"{self.cfg.ui.chart_timeframe} chart · executed trades",
            "#mini-chart": "1s · all signals ▲▼ executed △▽ not executed",
            "#sparks": "per second",
            "#positions": "positions",
            "#models": "models",
            "#signal-log": "signal log",
            "#training-log": "training events",
        }
        for sel, title in titles.items():
            self.query_one(sel).border_title = title
        self._charts = [self.query_one(PriceChart), self.query_one(SecondsChart)]
        self.refresh_snapshot()
        self.set_interval(1.0 / self.cfg.ui.refresh_hz, self.refresh_snapshot, name="snapshot")

    # ------------------------------------------------------------------ refresh

    def refresh_snapshot(self) -> None:
        """Pull one snapshot; :meth:`watch_snap` applies it."""
        t0 = time.perf_counter()
        self.snap = self.port.snapshot()
        self.refreshes += 1
        self.refresh_ms.append((time.perf_counter() - t0) * 1000)

    def watch_snap(self, snap: DeskSnapshot | None) -> None:
        """Apply a snapshot to every pane in a single batch, then the state it implies."""
        if snap is None:
            return
        live = is_live(snap)
        with self.app.batch_update():
            self.set_class(not live, "-stale")
            self._banner(snap)
            self.query_one(DeskHeader).show_snapshot(snap)
            self._titles(snap, live)
            # Hidden panes (small terminals) cost nothing: skip them.
            for chart in self._charts:
                if chart.display:
                    chart.show(snap)
            sparks = self.query_one(MarketSparks)
            if sparks.display:
                sparks.show(snap)
            positions = self.query_one(PositionsPane)
            positions.flat_hint = self._flat_hint(snap)
            positions.show(snap, live)
            models = self.query_one(ModelsPane)
            if models.display:
                models.show(snap.models, snap.models_note)
            self.query_one("#signal-log", EventLog).show(snap.log)
            training = self.query_one("#training-log", EventLog)
            training.set_waiting(TRAINING_WAIT if snap.training else "training is OFF: closed positions do not "
                                 f"train the models ({self._key_for('training')} turns it on)")
            training.show(snap.training_log)
        self.offline = snap.run_mode == "live" and str(snap.feed.get("status", "")).startswith("cannot reach")
        self.replay_done = bool(snap.replay.get("done"))
        self.replay_running = snap.run_mode == "replay" and not self.replay_done
        if snap.live_confirmation and not self._live_asked:
            self._live_asked = True
            self.ask_live_confirmation(snap.live_confirmation)

    def watch_offline(self, offline: bool) -> None:
        self._keys = None  # the sample-replay key comes or goes (bindings=True refreshes the footer)
        if offline:
            self.note(f"the exchange cannot be reached: still retrying; press {self._key_for('sample_replay')} "
                      "for the sample replay")

    def watch_replay_running(self) -> None:
        self._keys = None  # the pause key comes or goes

    def watch_replay_done(self, done: bool) -> None:
        if done:
            self.feed_status = FeedStatus("replay finished", "info")
            self.note("replay finished: the desk stays open", "good")

    def watch_feed_status(self) -> None:
        if self.snap is not None:  # shown at once, not at the next refresh
            self._banner(self.snap)

    def _banner(self, snap: DeskSnapshot) -> None:
        text, level = snap.banner, "alert" if snap.banner else ""
        feed_text, feed_level = self.feed_status
        v = primary_view(snap)
        if not text and feed_level == "alert":
            text, level = feed_text, "alert"
        if not text and v is not None and v.book_state == "STALE":
            text, level = f"BOOK STALE: {v.display} — numbers are dimmed until it resyncs", "alert"
        if not text and snap.replay.get("done"):
            text, level = "replay finished — the desk stays open for review; q quits", "info"
        elif not text and feed_text:
            text, level = feed_text, feed_level or "info"
        if not text and v is not None and v.book_state == "SYNCING":
            text, level = f"{v.display} book SYNCING: waiting for the depth snapshot; no trading until LIVE", "info"
        if not text and snap.replay.get("paused"):
            text, level = "replay PAUSED — space resumes", "info"
        self.query_one(Banner).show_banner(text, level)

    def _titles(self, snap: DeskSnapshot, live: bool) -> None:
        v = primary_view(snap)
        name = v.display if v is not None else snap.primary
        n = len(snap.candles)
        warm = " · warming up" if 0 < n < 20 else ""
        title = f"{name} {snap.chart_tf} · {n} bars{warm} · executed trades ▲ buy ▼ sell ◆ both"
        if not live:
            title += " · book not LIVE"
        self.query_one(PriceChart).border_title = title

    def _flat_hint(self, snap: DeskSnapshot) -> str:
        v = primary_view(snap)
        quote = quote_of(v.display) if v is not None else ""
        buy, sell = self._key_for("buy"), self._key_for("sell")
        return f"flat — {buy} buys, {sell} sells {fmt.qty(snap.order_notional)} {quote}".rstrip()

    def _key_for(self, name: str) -> str:
        key = self.key_map().get(name)
        return key.keys if key is not None else "?"

    def key_map(self) -> dict[str, KeyHelp]:
        """The desk's keys that apply now, after the settings keymap, in the order of
        :attr:`BINDINGS`: setting name -> (keys as displayed, footer label, help)."""
        if self._keys is None:
            found: dict[str, KeyHelp] = {}
            for ab in self.active_bindings.values():
                b = ab.binding
                if ab.node is self and b.id and b.id.startswith(KEY_PREFIX):
                    name = b.id.removeprefix(KEY_PREFIX)
                    shown = self.app.get_key_display(b)
                    prev = found.get(name)
                    found[name] = KeyHelp(f"{prev.keys} {shown}" if prev else shown, b.description,
                                          b.tooltip or b.description)
            self._keys = {name: found[name] for name in binding_names() if name in found}
        return self._keys

    # ------------------------------------------------------------------ commands

    def _send(self, cmd: Command) -> None:
        """One key press, one command, run at once (``DeskPort.send``); then show the result."""
        self.port.send(cmd)
        self.refresh_snapshot()  # show the result without waiting for the next tick

    def note(self, text: str, level: str = "warn") -> None:
        """A line from the desk itself in the signal log (why a key did nothing, feed end)."""
        self.query_one("#signal-log", EventLog).note("desk", text, level, self.snap.now_ns if self.snap else 0)

    def ask_live_confirmation(self, phrase: str) -> None:
        """Ask for the typed phrase that enables live orders (once at start, then on b / s)."""
        if isinstance(self.app.screen, ConfirmLive):
            return

        def answered(typed: str | None) -> None:
            if typed is None:
                self.note("live orders stay OFF until the phrase is typed (b or s asks again)")
            elif self.port.confirm_live(typed):
                self.note("LIVE trading confirmed: orders go to the exchange", "good")
            else:
                self.note("that is not the phrase: live orders stay OFF", "error")
            self.refresh_snapshot()

        self.app.push_screen(ConfirmLive(phrase), answered)

    def action_order(self, side: str) -> None:
        snap = self.port.snapshot()  # now, not as of the last refresh: the price may have just arrived
        if snap.live_confirmation:
            self.ask_live_confirmation(snap.live_confirmation)  # the order would be denied: ask instead
            return
        if snap.order_qty is None or snap.order_qty <= 0:
            self.note(f"{side} not sent: {self._why_no_qty(snap)}")
            return
        self._send(ManualOrder(snap.primary, Side(side)))  # against an open position: closes it

    @staticmethod
    def _why_no_qty(snap: DeskSnapshot) -> str:
        symbol = snap.primary
        v = next((x for x in snap.symbols if x.symbol == symbol), None)
        if v is None:
            return f"no market data for {symbol} yet"
        if v.last_price is None and v.bid is None:
            return f"no price for {v.display} yet (book {v.book_state})"
        return f"order size {fmt.qty(snap.order_notional)} is below {v.display}'s minimum quantity step"

    def action_close_position(self) -> None:
        self._send(ClosePosition(self.port.snapshot().primary, "manual"))

    def action_panic(self) -> None:
        self._send(Panic())

    def action_auto(self) -> None:
        self._send(SetAutoTrading(None))

    def action_toggle_model(self, model: str) -> None:
        self._send(ToggleModel(model))

    def action_training(self) -> None:
        self._send(SetTraining(None))

    def action_size(self, steps: int) -> None:
        self._send(SetOrderSize(steps))

    def action_pause(self) -> None:
        self._send(PauseReplay(None))

    def action_help(self) -> None:
        rows = [(key.keys, key.help) for key in self.key_map().values()]
        stats = self.refresh_stats()
        notes = [*PANES, "",
                 f"UI refresh {self.cfg.ui.refresh_hz:g} Hz: {stats['mean_ms']:.1f} ms mean, "
                 f"{stats['p95_ms']:.1f} ms p95 over {stats['n']:.0f} refreshes; "
                 f"chart redraws {stats['chart_draws']:.0f} ({stats['chart_ms']:.1f} ms mean)"]
        self.app.push_screen(HelpScreen(rows, notes))

    class SampleReplayRequested(Message):
        """The user asked for the sample replay while the live exchange cannot be reached."""

    def action_sample_replay(self) -> None:
        self.post_message(self.SampleReplayRequested())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that do not apply now are hidden; the reactives they depend on refresh the
        bindings when they change (``bindings=True``)."""
        if action == "sample_replay":
            return self.offline  # offered only while the live exchange cannot be reached
        if action == "pause":
            return self.replay_running  # pausing applies to a replay that is still running
        return True

    # ------------------------------------------------------------------ measurements

    def refresh_stats(self) -> dict[str, float]:
        ms = sorted(self.refresh_ms)
        charts = self._charts
        draws = sum(c.draws for c in charts)
        return {
            "n": float(len(ms)),
            "mean_ms": sum(ms) / len(ms) if ms else 0.0,
            "p95_ms": ms[int(0.95 * (len(ms) - 1))] if ms else 0.0,
            "max_ms": ms[-1] if ms else 0.0,
            "chart_draws": float(draws),
            "chart_ms": sum(c.draw_s for c in charts) * 1000 / draws if draws else 0.0,
        }


# ---------------------------------------------------------------------------- the key table


def desk_bindings() -> list[Binding]:
    """The desk's bindings as declared (default keys, before any settings keymap)."""
    return [b for b in DeskScreen.BINDINGS if isinstance(b, Binding)]


def binding_names() -> list[str]:
    """The desk's keys by their setting name in ``[keys]``, in declaration order."""
    return [b.id.removeprefix(KEY_PREFIX) for b in desk_bindings() if b.id and b.id.startswith(KEY_PREFIX)]


def key_table() -> list[tuple[str, str, str]]:
    """(default key as displayed, setting name, what it does) per desk key: what the key
    tables of README.md and docs/desk.md show (a test keeps them in step)."""
    rows = []
    for b in desk_bindings():
        if b.id and b.id.startswith(KEY_PREFIX):
            keys = " ".join(f"`{format_key(k.strip())}`" for k in b.key.split(","))
            rows.append((keys, f"`{b.id.removeprefix(KEY_PREFIX)}`", b.tooltip or b.description))
    return rows

"""The engine: applies market data to books, bars and features, runs commands, keeps
the paper account, and publishes events. Feeds (live, replay) push data in; adapters
(the desk, the headless runner) pull snapshots and subscribe to events.

Market data is applied synchronously, message by message, without touching the bus:
this is the hot path. Commands are queued and run between messages, so a replay on
the recorded clock stays deterministic.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from engine.core.bus import Bus
from engine.core.clock import Clock
from engine.core.events import (
    NS_PER_S,
    Bar,
    BestBidAsk,
    BookDelta,
    BookSnapshot,
    BookState,
    BookStateChanged,
    CancelOrders,
    ClosePosition,
    Command,
    DecisionMade,
    ManualOrder,
    MarketData,
    ModelTrained,
    Notice,
    OrderFilled,
    Panic,
    PauseReplay,
    PositionClosed,
    ReplayPaused,
    ResumeTrading,
    SetAutoTrading,
    SetOrderSize,
    SetTraining,
    SignalEmitted,
    SubmitOrder,
    ToggleModel,
    Trade,
    TradingStateChanged,
    TrainingSkipped,
)
from engine.core.ports import ModelsPort
from engine.core.settings import Settings
from engine.core.snapshot import (
    Candle,
    ClosedView,
    DeskSnapshot,
    LogLine,
    Marker,
    OrderView,
    PositionView,
    SymbolView,
)
from engine.core.symbols import default_filters, display_symbol
from engine.execution.executor import Executor
from engine.execution.ledger import Ledger
from engine.execution.orders import OrderManager, OrderPorts, OrderResult
from engine.execution.risk import STICKY, TradingState
from engine.market.bars import BarBuilder, TickCache
from engine.market.book import SyncedBook
from engine.market.features import BarFeatures
from engine.market.symbol_state import SymbolState
from models.common.schema import TIMEFRAMES

log = logging.getLogger(__name__)


class Engine:
    """One trading engine over any feed. ``mode`` is ``live``, ``replay`` or ``backtest``.

    ``ledger`` is the account's journal, ``executor`` the venue (paper or live); the
    kernel (:mod:`engine.kernel`) chooses both for each mode.
    """

    def __init__(self, settings: Settings, clock: Clock, *, mode: str, ledger: Ledger, executor: Executor) -> None:
        self.settings = settings
        self.clock = clock
        self.mode = mode
        self.bus = Bus()
        self.symbols: dict[str, SymbolState] = {}
        self.configured_primary = settings.symbols.primary.replace("/", "").upper()
        self.order_notional: Decimal = settings.trading.order_notional
        # Automatic trading: on by default for paper (live data or replay) and backtest,
        # off for real orders until the user switches it on (SPEC §4).
        self.auto_trade: bool = settings.trading.auto_trade and executor.name != "live"
        # Causes of a halt that clears by itself (a failing ledger) during which automatic
        # trading was on: it is switched back on when they clear. Empty: nothing to restore.
        self._auto_off_for: set[str] = set()
        self.training: bool = True
        self.paused = False
        self.brain: ModelsPort | None = None  # the models, once attach_models() has been called
        self._shutdown_hooks: list[Callable[[], object]] = []
        self._bar_listeners: list[Callable[[Bar], None]] = []
        self._market_watchers: list[Callable[[MarketData], None]] = []
        self._commands: deque[Command] = deque()
        self.log: deque[LogLine] = deque(maxlen=400)
        self.training_log: deque[LogLine] = deque(maxlen=200)
        self.fill_markers: deque[Marker] = deque(maxlen=500)
        self.signal_markers: deque[Marker] = deque(maxlen=500)
        self.decisions = 0
        self.signals: dict[str, int] = {}
        self.messages = 0
        self.started_wall = time.perf_counter()
        self.feed_info: dict[str, object] = {}
        self.replay_info: dict[str, object] = {}
        self._snap_seq = 0
        self.bus.on(SignalEmitted, self._on_signal)
        self.bus.on(DecisionMade, self._on_decision)
        self.bus.on(ModelTrained, self._on_trained)
        self.bus.on(TrainingSkipped, self._on_training_skipped)
        self.bus.on(TradingStateChanged, self._on_trading_state)
        ports = OrderPorts(symbol=self.symbols.get, marks=self.marks, primary=lambda: self.primary,
                           now_ns=clock.now_ns, publish=self.bus.publish, log=self._log,
                           mark_fill=self.fill_markers.append)
        self.orders = OrderManager(settings, ports, ledger, executor)
        self.on_shutdown(self.orders.shutdown)
        self.portfolio = self.orders.portfolio
        self.ledger = self.orders.ledger
        self.executor = self.orders.executor
        self.risk = self.orders.risk

    @property
    def fills(self) -> list[OrderFilled]:
        """Every fill applied to the account (the order path's record)."""
        return self.orders.fills

    @property
    def denials(self) -> int:
        return self.orders.denials

    @property
    def orders_sent(self) -> int:
        return self.orders.sent

    # ------------------------------------------------------------------ symbols

    @property
    def primary(self) -> str:
        """The configured primary symbol, or (in a replay without it) the first one seen."""
        if self.configured_primary in self.symbols or not self.symbols:
            return self.configured_primary
        return next(iter(self.symbols))

    def add_symbol(self, symbol: str, request_snapshot: Callable[[str], None] | None = None) -> SymbolState:
        symbol = symbol.replace("/", "").upper()
        if symbol in self.symbols:
            return self.symbols[symbol]
        s = self.settings
        st = SymbolState(
            symbol=symbol,
            book=SyncedBook(symbol, request_snapshot, self._on_book_state),
            bars=BarBuilder(symbol, TIMEFRAMES, self._on_bar_of, s.bars.close_grace_ms * 1_000_000, s.bars.history),
            ticks=TickCache(s.bars.tick_cache_s),
            filters=default_filters(symbol),
            features={tf: BarFeatures() for tf in TIMEFRAMES},
        )
        self.symbols[symbol] = st
        return st

    def _state(self, symbol: str) -> SymbolState:
        st = self.symbols.get(symbol)
        return st if st is not None else self.add_symbol(symbol)

    # ------------------------------------------------------------------ market data (hot path)

    def on_market(self, ev: MarketData) -> None:
        if self._market_watchers:  # e.g. the shadow positions' paper venue, before this message applies
            for fn in self._market_watchers:
                fn(ev)
        if self.orders.watching:  # delayed orders fill on the book as it was before this message
            self.orders.before_market(ev)
        self.messages += 1
        st = self._state(ev.symbol)
        st.messages += 1
        st.last_recv_ns = ev.ts_recv
        kind = type(ev)
        if kind is BestBidAsk:
            st.book.on_bbo(ev)  # type: ignore[arg-type]
            st.bbo_updates += 1
        elif kind is BookDelta:
            st.book.on_delta(ev)  # type: ignore[arg-type]
            st.last_event_ns = ev.ts_event  # type: ignore[union-attr]
            st.bars.advance(ev.ts_event)  # type: ignore[union-attr]
        elif kind is Trade:
            self._on_trade(st, ev)  # type: ignore[arg-type]
        elif kind is BookSnapshot:
            st.book.on_snapshot(ev)  # type: ignore[arg-type]
        if self.brain is not None:
            self.brain.on_market(st, ev)
        if self._commands:
            self.run_commands()

    def _on_trade(self, st: SymbolState, t: Trade) -> None:
        if not st.recent_trade_ids.add(t.trade_id):
            st.duplicate_trades += 1  # seen among the recent trade ids: applied once
            return
        st.trades += 1
        if t.trade_id > st.last_trade_id:  # a reordered older trade is applied, but is not the last price
            st.last_trade_id = t.trade_id
            st.last_price = t.price
        if st.first_price is None:
            st.first_price = t.price
        st.last_event_ns = t.ts_event
        st.ticks.add(t)
        st.bars.add_trade(t)
        if self.orders.watching:  # resting limit orders fill when a trade prints through them
            self.orders.on_trade(t)

    def _on_bar_of(self, bar: Bar) -> None:
        self._on_bar(self.symbols[bar.symbol], bar)

    def _on_bar(self, st: SymbolState, bar: Bar) -> None:
        row = st.features[bar.timeframe].update(bar)
        if bar.timeframe == "1s":
            bids, asks = st.book.book.top_bids(5), st.book.book.top_asks(5)
            b = float(sum(q for _, q in bids))
            a = float(sum(q for _, q in asks))
            st.imbalance.append((b - a) / (b + a) if b + a > 0 else 0.0)
            if st.symbol == self.primary:  # once a second: day loss limit, due orders, ledger retries
                self.orders.housekeeping(self.clock.now_ns())
        for listener in self._bar_listeners:
            listener(bar)
        if self.brain is not None:
            self.brain.on_bar(st, bar, row)

    def _on_book_state(self, symbol: str, state: BookState, reason: str) -> None:
        now = self.clock.now_ns()
        level = "good" if state is BookState.LIVE else "warn"
        self._log(now, "book", f"{display_symbol(symbol)} book {state.value}: {reason}", level)
        self.bus.publish(BookStateChanged(symbol, state, reason, now))
        self.orders.on_book_state(symbol, state, reason, now)

    # ------------------------------------------------------------------ commands

    def submit(self, cmd: Command) -> None:
        """Queue a command; it runs before the next market message (or on ``run_commands``)."""
        self._commands.append(cmd)

    def send(self, cmd: Command) -> None:
        """Queue a command and run it at once (the desk's way in, ``DeskPort``): one key
        press, one command, applied even while a replay is paused or after it ended."""
        self.submit(cmd)
        self.run_commands()

    def execute(self, cmd: SubmitOrder | ClosePosition) -> OrderResult:
        """Run an order command now, after any queued before it, and say what became of it
        (the decision code's way in: it learns at once whether its order went out)."""
        self.run_commands()
        now = self.clock.now_ns()
        if isinstance(cmd, SubmitOrder):
            return self.orders.submit(cmd, now)
        return self.orders.close_position(cmd, now)

    def run_commands(self) -> None:
        while self._commands:
            cmd = self._commands.popleft()
            try:
                self._run(cmd)
            except Exception as exc:  # a bad command must not stop the engine
                log.exception("command %r failed", cmd)
                self._log(self.clock.now_ns(), "engine", f"{type(cmd).__name__} failed: {exc}", "error")

    def _run(self, cmd: Command) -> None:
        now = self.clock.now_ns()
        if isinstance(cmd, SubmitOrder):
            self.orders.submit(cmd, now)
        elif isinstance(cmd, ClosePosition):
            self.orders.close_position(cmd, now)
        elif isinstance(cmd, ManualOrder):
            self._manual_order(cmd, now)
        elif isinstance(cmd, SetAutoTrading):
            self._auto_off_for.clear()  # the user's decision stands, halt or not
            self.auto_trade = (not self.auto_trade) if cmd.enabled is None else cmd.enabled
            self._log(now, "engine", f"automatic trading {'ON' if self.auto_trade else 'OFF'}")
        elif isinstance(cmd, SetTraining):
            self.training = (not self.training) if cmd.enabled is None else cmd.enabled
            self._log(now, "engine", f"training {'ON' if self.training else 'OFF'}")
        elif isinstance(cmd, ToggleModel):
            if self.brain is None:
                self._log(now, "engine", f"no models loaded: cannot toggle {cmd.model}", "warn")
            else:
                self.brain.toggle(cmd.model, cmd.enabled)
        elif isinstance(cmd, Panic):
            self.auto_trade = False
            self._log(now, "risk", "PANIC: cancel all, flatten, HALT", "error")
            self.orders.panic(now)
        elif isinstance(cmd, CancelOrders):
            n = self.orders.cancel(cmd.symbol, cmd.client_id, now)
            self._log(now, "engine", f"{n} order(s) canceled")
        elif isinstance(cmd, ResumeTrading):
            self.orders.resume(now)
        elif isinstance(cmd, PauseReplay):
            self.paused = (not self.paused) if cmd.paused is None else cmd.paused
            self.bus.publish(ReplayPaused(self.paused, now))  # the replay driver holds or resumes
        elif isinstance(cmd, SetOrderSize):
            self._set_order_size(cmd.steps, now)

    def _manual_order(self, cmd: ManualOrder, now: int) -> None:
        """SELL when long (or BUY when short) closes the position: the whole of it, not the
        order size at today's price, which would leave a sliver or flip it."""
        position, pending = self.orders.exposure(cmd.symbol)
        if (position + pending) * cmd.side.sign < 0:
            self.orders.close_position(ClosePosition(cmd.symbol, "manual"), now)
            return
        qty = self.order_qty(cmd.symbol)
        if qty is None or qty <= 0:
            self._log(now, "manual", f"{cmd.side.value} not sent: no price to size the order by "
                                     f"({self.order_notional} of {display_symbol(cmd.symbol)})", "warn")
            return
        self.orders.submit(SubmitOrder(cmd.symbol, cmd.side, qty, "manual"), now)

    def _set_order_size(self, steps: int, now: int) -> None:
        """Move the order notional by whole steps, within [one step, risk.max_order_notional]."""
        step = self.settings.trading.notional_step
        cap = max(self.settings.risk.max_order_notional, step)
        want = self.order_notional + step * steps
        self.order_notional = min(max(want, step), cap)
        why = ""
        if want < step:
            why = f" (never below one step: {step})"
        elif want > cap:
            why = f" (capped at risk.max_order_notional: {cap})"
        self._log(now, "engine", f"order size {self.order_notional}{why}")

    def order_qty(self, symbol: str) -> Decimal | None:
        """The configured order notional as a quantity at the current mid, rounded to the step."""
        st = self.symbols.get(symbol)
        if st is None:
            return None
        mid = st.book.mid() or st.last_price
        if not mid:
            return None
        return st.filters.round_qty(self.order_notional / mid)

    # ------------------------------------------------------------------ execution (engine.orders)

    @property
    def trading_state(self) -> str:
        """ACTIVE / REDUCING / HALTED (``engine.execution.risk``); ``self.risk.reason`` says why."""
        return self.orders.risk.state.value

    @property
    def live_confirmation_required(self) -> bool:
        """Live executor, not yet confirmed: the desk asks for :attr:`live_confirmation_phrase`."""
        return not self.orders.live_confirmed

    @property
    def live_confirmation_phrase(self) -> str:
        return str(getattr(self.executor, "confirmation_phrase", ""))

    def confirm_live(self, typed: str) -> bool:
        """Enable live orders if ``typed`` is exactly the confirmation phrase."""
        return self.orders.confirm_live(typed, self.live_confirmation_phrase)

    def housekeeping(self) -> None:
        """Call about once a second when market data may be idle (live): due orders, loss limit."""
        self.orders.housekeeping(self.clock.now_ns())

    def journal_shadow(self, model: str, ev: PositionClosed, exploratory: bool) -> None:
        """Journal one of a model's closed shadow positions (apart from the account's)."""
        self.ledger.record_shadow(model, ev, exploratory)

    def journal_reward(self, ev: PositionClosed, reward: Any, owner: str = "account") -> None:
        """Journal a closed position's reward and its components (called by the brain);
        ``owner`` is "account", or the model whose shadow position it was."""
        self.ledger.record_reward(ev.position_id, owner, float(reward.total), dict(reward.components), ev.exit_ts,
                                  source="account" if owner == "account" else "shadow")

    # ------------------------------------------------------------------ lifecycle

    def watch_market(self, fn: Callable[[MarketData], None]) -> None:
        """Call ``fn(ev)`` before each market message is applied (a simulated venue fills
        latency-delayed orders on the book as it stood then, as the paper venue does)."""
        self._market_watchers.append(fn)

    def on_bar_closed(self, fn: Callable[[Bar], None]) -> None:
        """Call ``fn(bar)`` on every bar close of every symbol (e.g. offline training's series)."""
        self._bar_listeners.append(fn)

    def attach_models(self, models: ModelsPort) -> None:
        """Plug the models in (the kernel does this once, before the first message); they
        are closed, and their checkpoints saved, at shutdown."""
        if self.brain is not None:
            raise RuntimeError("models are already attached to this engine")
        self.brain = models
        self.on_shutdown(models.close)

    def on_shutdown(self, fn: Callable[[], object], *, after_all: bool = False) -> None:
        """Run ``fn`` at shutdown (last registered runs first; ``after_all``: after every
        other hook, the ledger's close included)."""
        if after_all:
            self._shutdown_hooks.insert(0, fn)
        else:
            self._shutdown_hooks.append(fn)

    def shutdown(self) -> None:
        """Flush and close: checkpoints saved, ledger closed. Safe to call twice."""
        hooks, self._shutdown_hooks = self._shutdown_hooks, []
        for fn in reversed(hooks):
            try:
                fn()
            except Exception:
                log.exception("shutdown hook %r failed", fn)

    # ------------------------------------------------------------------ signals & decisions

    def _on_signal(self, ev: SignalEmitted) -> None:
        self.signals[ev.model] = self.signals.get(ev.model, 0) + 1
        self.ledger.record_signal(ev)

    def working_order(self, symbol: str, reason: str = "auto") -> str | None:
        """The client id of a ``reason`` order for ``symbol`` still working, if any (the
        decision code sends no new automatic order for a symbol while one is)."""
        return self.orders.working(symbol, reason)

    def _on_trading_state(self, ev: TradingStateChanged) -> None:
        """A halt stops automatic trading. A halt that clears by itself (a failing ledger)
        gives it back when it clears; one the user must clear (panic, refused keys, repeated
        errors) leaves it off until the user turns it on, as does the user's own switch."""
        halting = {c for c, (st, _) in self.risk.causes.items() if st is TradingState.HALTED}
        if ev.state == "HALTED":
            if halting & STICKY:
                self._auto_off_for.clear()
            elif self.auto_trade or self._auto_off_for:
                self._auto_off_for |= halting
            self.auto_trade = False
        elif self._auto_off_for:
            cleared = ", ".join(sorted(self._auto_off_for))
            self._auto_off_for.clear()
            self.auto_trade = True
            self._log(ev.ts, "engine", f"automatic trading restored (ON): the {cleared} halt cleared", "good")
            log.info("automatic trading restored (ON): the %s halt cleared", cleared)

    def _on_decision(self, ev: DecisionMade) -> None:
        self.decisions += 1
        self.ledger.record_decision(ev)

    def _on_trained(self, ev: ModelTrained) -> None:
        self.ledger.record_training(ev)

    def _on_training_skipped(self, ev: TrainingSkipped) -> None:
        self.ledger.record_skip(ev)

    def _log(self, ts: int, source: str, text: str, level: str = "info") -> None:
        self.log.append(LogLine(ts, source, text, level))
        self.bus.publish(Notice(level, f"[{source}] {text}", ts))

    # ------------------------------------------------------------------ views

    def marks(self) -> dict[str, Decimal]:
        out = {}
        for sym, st in self.symbols.items():
            m = st.book.mid() or st.last_price
            if m is not None:
                out[sym] = m
        return out

    def snapshot(self, chart_tf: str | None = None, n_candles: int = 120) -> DeskSnapshot:
        """An immutable view for the desk; cheap enough for 10 Hz."""
        self._snap_seq += 1
        now = self.clock.now_ns()
        chart_tf = chart_tf or self.settings.ui.chart_timeframe
        views = []
        for sym, st in self.symbols.items():
            bid, ask = st.book.best_bid(), st.book.best_ask()
            if st.book.bbo is not None and st.book.state is BookState.LIVE:
                bid, ask = st.book.bbo.bid, st.book.bbo.ask
            change = None
            if st.first_price and st.last_price:
                change = float((st.last_price - st.first_price) / st.first_price * 100)
            views.append(SymbolView(
                sym, display_symbol(sym), st.last_price, bid, ask,
                (ask - bid) if bid is not None and ask is not None else None,
                change, st.book.state.value,
                (now - st.last_recv_ns) / NS_PER_S if st.last_recv_ns else None,
                st.trades, dict(st.bars.counts),
            ))
        prim = self.symbols.get(self.primary)
        candles: tuple[Candle, ...] = ()
        seconds: tuple[Candle, ...] = ()
        imb: tuple[float, ...] = ()
        if prim is not None:
            candles = tuple(_candle(b) for b in prim.bars.all_bars(chart_tf)[-n_candles:])
            seconds = tuple(_candle(b) for b in prim.bars.all_bars("1s")[-n_candles:])
            imb = tuple(prim.imbalance)[-n_candles:]
        marks = self.marks()
        positions = []
        for pos in self.portfolio.positions.values():
            mark = marks.get(pos.symbol)
            positions.append(PositionView(pos.position_id, pos.symbol, pos.side.value, pos.qty, pos.entry_price,
                                          mark, pos.unrealised(mark) if mark is not None else None, pos.fees))
        closed = tuple(ClosedView(c.position_id, c.symbol, c.side.value, c.qty, c.entry_price, c.exit_price,
                                  c.fees, c.realised_pnl, c.exit_ts) for c in self.portfolio.closed[-50:])
        models: tuple[dict[str, object], ...] = ()
        note = "no models loaded yet: no automatic decisions"
        if self.brain is not None:
            models = tuple(self.brain.status())
            note = self.brain.note()
        books_bad = [v.display for v in views if v.book_state != "LIVE"]
        banner = ""
        if self.trading_state != "ACTIVE":
            banner = f"TRADING {self.trading_state}: {self.risk.reason}"
        elif self.live_confirmation_required:
            banner = f"LIVE trading not confirmed: type {self.live_confirmation_phrase!r} to enable orders"
        elif books_bad and self.mode == "live":
            banner = "BOOK NOT LIVE: " + ", ".join(books_bad)
        return DeskSnapshot(
            seq=self._snap_seq, now_ns=now, mode=self.mode_label(), primary=self.primary,
            symbols=tuple(views), chart_tf=chart_tf, candles=candles, seconds=seconds,
            fill_markers=tuple(m for m in self.fill_markers),
            signal_markers=tuple(self.signal_markers), imbalance=imb,
            positions=tuple(positions), closed=closed,
            realised_pnl=self.portfolio.realised_pnl, unrealised_pnl=self.portfolio.unrealised(marks),
            fees=self.portfolio.fees, balance=self.balance(), order_notional=self.order_notional,
            trading_state=self.trading_state, auto_trade=self.auto_trade, training=self.training,
            log=tuple(self.log)[-100:], training_log=tuple(self.training_log)[-50:],
            models=models, models_note=note, feed=dict(self.feed_info), replay=dict(self.replay_info),
            counters={"messages": self.messages, "fills": len(self.fills), "denials": self.denials,
                      "decisions": self.decisions, "orders_sent": self.orders_sent,
                      "open_orders": len(self.orders.open)},
            device=self.brain.device_label if self.brain is not None else "CPU", banner=banner, trading_reason=self.risk.reason,
            open_orders=tuple(OrderView(o.request.client_id, o.request.symbol, o.request.side.value, o.request.qty,
                                        o.filled, o.request.limit_price, o.state.value)
                              for o in self.orders.open.values()),
            live_confirmation=self.live_confirmation_phrase if self.live_confirmation_required else "",
            run_mode=self.mode, order_qty=self.order_qty(self.primary),
        )

    def mode_label(self) -> str:
        if self.mode == "replay":
            speed = self.replay_info.get("speed", "")
            return f"REPLAY ×{speed}" if speed else "REPLAY"
        if self.executor.name == "live":
            return "LIVE TESTNET" if getattr(self.executor, "sandbox", False) else "LIVE"
        return {"live": "PAPER", "backtest": "BACKTEST"}.get(self.mode, self.mode.upper())

    def balance(self) -> Decimal:
        """Paper: the quote balance derived from the fill ledger. Live: the exchange's free quote balance."""
        return self.orders.balance()

    # ------------------------------------------------------------------ summary

    def summary(self, wall_s: float | None = None) -> dict[str, Any]:
        wall = wall_s if wall_s is not None else time.perf_counter() - self.started_wall
        per: dict[str, Any] = {}
        for sym, st in self.symbols.items():
            c = st.book.counters
            per[sym] = {
                "messages": st.messages,
                "trades": st.trades,
                "duplicate_trades": st.duplicate_trades,
                "book_updates": c.updates,
                "bbo_updates": st.bbo_updates,
                "book_snapshots": c.snapshots,
                "book_resyncs": c.resyncs,
                "gaps_detected": c.gaps,
                "crossed_books": c.crossed,
                "stale_diffs_dropped": c.stale_dropped,
                "book_state": st.book.state.value,
                "bars": dict(st.bars.counts),
                "late_trades": st.bars.late_trades,
                "last_price": str(st.last_price) if st.last_price is not None else None,
                "fills": sum(1 for f in self.fills if f.symbol == sym),
                "positions_closed": sum(1 for p in self.portfolio.closed if p.symbol == sym),
                "realised_pnl": str(sum((p.realised_pnl for p in self.portfolio.closed if p.symbol == sym), Decimal(0))),
                "fees": str(sum((f.fee for f in self.fills if f.symbol == sym), Decimal(0))),
            }
        totals: dict[str, Any] = {
            "messages": self.messages,
            "trades": sum(p["trades"] for p in per.values()),
            "book_updates": sum(p["book_updates"] for p in per.values()),
            "book_resyncs": sum(p["book_resyncs"] for p in per.values()),
            "gaps_detected": sum(p["gaps_detected"] for p in per.values()),
            "crossed_books": sum(p["crossed_books"] for p in per.values()),
            "duplicate_trades": sum(p["duplicate_trades"] for p in per.values()),
            "book_state": _worst_state([p["book_state"] for p in per.values()]),
            "bars": {tf: sum(p["bars"].get(tf, 0) for p in per.values()) for tf in TIMEFRAMES},
            "decisions": self.decisions,
            "signals": dict(self.signals),
            "fills": len(self.fills),
            "denials": self.denials,
            "denials_by_code": dict(self.risk.denied),
            "orders_sent": self.orders_sent,
            "order_errors": self.orders.errors,
            "slippage_bps": _stats(self.orders.slippage_bps),
            "trading_state": self.trading_state,
            "balance": str(self.balance()),
            "ledger": str(self.ledger.path or ":memory:"),
            "positions_closed": len(self.portfolio.closed),
            "training_steps": self.brain.training_steps() if self.brain is not None else {},
            "rewards": self.brain.reward_stats() if self.brain is not None else {"count": 0},
            "realised_pnl": str(self.portfolio.realised_pnl),
            "fees": str(self.portfolio.fees),
            "wall_s": round(wall, 3),
            "msgs_per_s": round(self.messages / wall, 1) if wall > 0 else None,
        }
        if self.brain is not None:
            totals.update(self.brain.summary_extra())
        return {**totals, "per_symbol": per}


def _stats(xs: list[float]) -> dict[str, float | int]:
    if not xs:
        return {"count": 0}
    return {"count": len(xs), "mean": round(sum(xs) / len(xs), 3), "max": round(max(xs), 3)}


def _worst_state(states: list[str]) -> str:
    for s in ("STALE", "SYNCING"):
        if s in states:
            return s
    return "LIVE" if states else "SYNCING"


def _candle(b: Bar) -> Candle:
    return Candle(b.open_time, float(b.open), float(b.high), float(b.low), float(b.close), float(b.volume))


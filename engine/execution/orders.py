"""The order path: every order (manual, automatic, close, panic) goes risk gate →
ledger intent → executor → ledger outcome and fills → positions → events.

The :class:`OrderManager` belongs to one engine but sees only the few ports it needs
(:class:`OrderPorts`: a symbol's book and filters, the marks, the clock, publish, log).
It owns the risk gate, the ledger, the executor, the portfolio and its own counters,
restores the account from the ledger at start, and keeps the paper balance as a sum over
the fill ledger. The engine calls it from its command loop and, cheaply, from the
market-data path while the executor has orders queued or resting (:attr:`watching`).
Every order command answers with an :class:`OrderResult`, so the caller knows whether
its order went out and, if not, why.

State is written before it is published: the ledger commits a fill before the portfolio
applies it, and the portfolio is updated before anyone hears about it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.core import failpoints
from engine.core.events import (
    NS_PER_S,
    BookState,
    ClosePosition,
    MarketData,
    OrderDenied,
    OrderFilled,
    PositionClosed,
    PositionOpened,
    Side,
    SubmitOrder,
    Trade,
    TradingStateChanged,
)
from engine.core.secrets import redact
from engine.core.settings import Settings
from engine.core.snapshot import Marker
from engine.core.symbols import display_symbol
from engine.execution.executor import (
    ExecReport,
    Executor,
    ExecutorPorts,
    OpenOrder,
    OrderRequest,
    OrderState,
    OrderType,
)
from engine.execution.ledger import Ledger, LedgerError
from engine.execution.paper_executor import vwap
from engine.execution.positions import Portfolio
from engine.execution.risk import (
    CAUSE_AUTH,
    CAUSE_LEDGER,
    CAUSE_PANIC,
    CAUSE_VENUE,
    Denial,
    OrderCheck,
    RiskGate,
    RiskLimits,
    TradingState,
)

if TYPE_CHECKING:
    from engine.market.symbol_state import SymbolState

log = logging.getLogger(__name__)

ZERO = Decimal(0)
DAY_NS = 86_400 * NS_PER_S
AUTH_ERROR_NAMES = ("AuthenticationError", "PermissionDenied", "AccountSuspended", "AccountNotEnabled")


@dataclass(frozen=True)
class OrderPorts:
    """What the order path needs from its engine, and nothing more."""

    symbol: Callable[[str], SymbolState | None]  # a symbol's book, filters, last price and message age
    marks: Callable[[], dict[str, Decimal]]  # mid (else last) price per symbol
    primary: Callable[[], str]  # the traded symbol
    now_ns: Callable[[], int]  # the engine's clock
    publish: Callable[[object], None]  # events to the bus, after the state is written
    log: Callable[[int, str, str, str], None]  # (ts, source, text, level) to the desk's log
    mark_fill: Callable[[Marker], None]  # an executed trade for the chart


@dataclass(frozen=True, slots=True)
class OrderResult:
    """What became of an order command: sent past the risk gate (fills may follow), or not and why."""

    sent: bool
    client_id: str | None = None
    reason: str = ""


class OrderManager:
    """Risk, ledger, executor and portfolio for one engine (see the module docstring)."""

    def __init__(self, settings: Settings, ports: OrderPorts, ledger: Ledger, executor: Executor) -> None:
        s = settings
        self.ports = ports
        self.ledger = ledger
        self.executor: Executor = executor
        # Reports are stamped on the engine's clock; paper fills walk the engine's books.
        executor.bind(ExecutorPorts(on_report=self._on_async_report, now_ns=ports.now_ns,
                                    book_of=self._book_of, on_halt=self._on_venue_halt))
        self.live = executor.name == "live"
        # Spot live accounts cannot short; paper shorts only if paper.allow_short.
        self.allow_short = bool(s.paper.allow_short) and not self.live
        self.portfolio = Portfolio(allow_short=self.allow_short)
        self.risk = RiskGate(RiskLimits.from_settings(s.risk), self.allow_short, self._on_state_change)
        self.starting_balance: Decimal = s.paper.starting_balance
        self.open: dict[str, OpenOrder] = {}
        self.applied: set[str] = set()
        self.cash = self.starting_balance
        self.fills: list[OrderFilled] = []  # every fill applied (restored ones first)
        self.sent = 0  # orders handed to the executor in this process
        self.denials = 0  # orders refused by the risk gate or rejected by the venue
        self.last_denial = ""  # why the latest one was refused
        self.watching = False  # True while paper orders are queued (latency) or resting
        self.errors = 0  # venue rejections and unknown outcomes
        self.slippage_bps: list[float] = []  # per filled market order: VWAP against the price it was checked at
        self.live_confirmed = not self.live
        self.reconciling: set[str] = set()  # unknown orders being resolved: no new entries meanwhile
        self.restored: dict[str, Any] = {}
        self.position_mismatches = 0
        self._seq = ledger.next_order_seq()
        self._day_key = -1
        self._day_base = ZERO
        self._restore()

    # ------------------------------------------------------------------ helpers

    def _book_of(self, symbol: str) -> Any:
        st = self.ports.symbol(symbol)
        return st.book if st is not None else None

    def _now(self) -> int:
        return self.ports.now_ns()

    def _watch(self) -> None:
        """Whether the market path must call us (queued or resting paper orders)."""
        self.watching = self.executor.busy()

    def exposure(self, symbol: str) -> tuple[Decimal, Decimal]:
        """(signed open position, signed quantity still to come from open orders)."""
        pos = self.portfolio.positions.get(symbol)
        position = pos.qty * pos.side.sign if pos is not None else ZERO
        pending = sum((o.remaining * o.request.side.sign for o in self.open.values() if o.request.symbol == symbol),
                      ZERO)
        return position, pending

    def _ref_price(self, st: SymbolState, side: Side) -> Decimal | None:
        """The price a market order is checked at: the touch it would take, else mid, else last."""
        touch = st.book.best_ask() if side is Side.BUY else st.book.best_bid()
        return touch or st.book.mid() or st.last_price

    def working(self, symbol: str, reason: str) -> str | None:
        """The client id of an order for ``symbol`` sent for ``reason`` (e.g. "auto") that is
        still working (sent, resting or unknown, not yet filled, canceled or rejected)."""
        for cid, o in self.open.items():
            if o.request.symbol == symbol and o.request.reason == reason:
                return cid
        return None

    def equity(self) -> Decimal:
        eq = self.cash
        marks = self.ports.marks()
        for sym, pos in self.portfolio.positions.items():
            m = marks.get(sym, pos.entry_price)
            eq += pos.qty * pos.side.sign * m
        return eq

    def _buying_power(self) -> Decimal | None:
        if self.live:
            return None  # the exchange checks funds (InsufficientFunds is a rejection)
        marks = self.ports.marks()
        gross = ZERO
        for sym, pos in self.portfolio.positions.items():
            gross += pos.qty * marks.get(sym, pos.entry_price)
        for o in self.open.values():
            gross += o.remaining * marks.get(o.request.symbol, o.request.ref_price or ZERO)
        return self.equity() - gross

    def balance(self) -> Decimal:
        """Paper: the quote balance derived from the fill ledger (start − cost of buys + proceeds
        of sells − fees). Live: the exchange's free quote balance, once it has been read."""
        if self.live:
            bal = getattr(self.executor, "balances", {}) or {}
            quote = display_symbol(self.ports.primary()).partition("/")[2]
            if quote in bal:
                return Decimal(bal[quote])
        return self.cash

    # ------------------------------------------------------------------ commands

    def submit(self, cmd: SubmitOrder, now: int, *, force: bool = False) -> OrderResult:
        """Check, journal and send one order: sent (with its client id), or denied with the reason."""
        st = self.ports.symbol(cmd.symbol)
        if st is None:
            return self._deny(cmd, Denial("unknown_symbol", f"unknown symbol {cmd.symbol}"), now)
        if not self.live_confirmed:
            return self._deny(cmd, Denial("not_confirmed", "live trading is not confirmed yet: type the "
                                                           "confirmation phrase first"), now)
        if self.reconciling and not force:
            return self._deny(cmd, Denial("reconciling", f"{len(self.reconciling)} order(s) with unknown outcome "
                                                         "are being resolved with the exchange first"), now)
        if not self.ledger.healthy and not self.ledger.flush():
            self.risk.set_cause(CAUSE_LEDGER, TradingState.HALTED, f"ledger writes failing: {self.ledger.last_error}",
                                now)
            return self._deny(cmd, Denial("ledger", f"ledger writes are failing ({self.ledger.last_error}); "
                                                    "new orders are refused until it recovers"), now)
        self.risk.clear_cause(CAUSE_LEDGER, now)
        limit = cmd.limit_price
        ref = limit if limit is not None else self._ref_price(st, cmd.side)
        position, pending = self.exposure(cmd.symbol)
        check = OrderCheck(
            cmd.symbol, cmd.side, cmd.qty, ref, st.filters, st.book.state, position, pending, limit,
            data_age_ns=(now - st.last_recv_ns) if st.last_recv_ns else None,
            buying_power=self._buying_power(), force=force, needs_book=not (self.live and force),
        )
        qty, denial = self.risk.check(check, now)
        if denial is not None:
            return self._deny(cmd, denial, now)
        cid = f"td-{self.ledger.nonce}-{self._seq}"
        req = OrderRequest(cid, cmd.symbol, cmd.side, qty, OrderType.LIMIT if limit is not None else OrderType.MARKET,
                           limit, cmd.reason, cmd.decision_id, now, ref)
        try:
            self.ledger.record_intent(req, self._seq)
        except LedgerError as exc:
            self.risk.order_error(str(exc), now)
            return self._deny(cmd, Denial("ledger", str(exc)), now)
        self._seq += 1
        self.risk.accepted(now)
        failpoints.hit("after_intent")
        self.open[cid] = OpenOrder(req, OrderState.SENT)
        self.sent += 1
        reports = self.executor.submit(req, now)
        failpoints.hit("after_send")
        for rep in reports:
            self.handle(rep)
        self._watch()
        return OrderResult(True, cid)

    def close_position(self, cmd: ClosePosition, now: int) -> OrderResult:
        """Flatten one symbol: cancel its limit orders, then send what is left of the position.

        Market orders already on their way are left alone and counted: a second close while
        the first is in flight sends nothing.
        """
        for cid, o in list(self.open.items()):
            if o.request.symbol == cmd.symbol and o.request.order_type is OrderType.LIMIT:
                self.cancel(None, cid, now)
        position, pending = self.exposure(cmd.symbol)
        left = position + pending
        if position == 0:
            why = f"no open {display_symbol(cmd.symbol)} position to close"
            self.ports.log(now, cmd.reason, why, "warn")
            return OrderResult(False, reason=why)
        if left == 0 or (left > 0) != (position > 0):
            why = f"{display_symbol(cmd.symbol)}: a close is already on its way"
            self.ports.log(now, cmd.reason, why, "warn")
            return OrderResult(False, reason=why)
        side = Side.SELL if left > 0 else Side.BUY
        return self.submit(SubmitOrder(cmd.symbol, side, abs(left), cmd.reason, cmd.decision_id), now)

    def cancel(self, symbol: str | None, client_id: str | None, now: int) -> int:
        """Cancel open orders (all, one symbol's, or one); returns how many were canceled."""
        n = 0
        for cid, o in list(self.open.items()):
            if (client_id is not None and cid != client_id) or (symbol is not None and o.request.symbol != symbol):
                continue
            for rep in self.executor.cancel(cid, now):
                self.handle(rep)
                n += rep.state is OrderState.CANCELED
        self._watch()
        return n

    def panic(self, now: int) -> None:
        """Halt, cancel everything, flatten every position (the panic bypasses state and rate limits)."""
        self.risk.set_cause(CAUSE_PANIC, TradingState.HALTED, "panic: flattened and halted", now)
        self.cancel(None, None, now)
        for sym, pos in list(self.portfolio.positions.items()):
            _, pending = self.exposure(sym)
            qty = pos.qty - abs(pending) if (pending * pos.side.sign) < 0 else pos.qty
            if qty > 0:
                self.submit(SubmitOrder(sym, pos.side.opposite(), qty, "panic"), now, force=True)

    def resume(self, now: int) -> None:
        cleared = self.risk.resume(now)
        state = self.risk.state.value
        self.ports.log(now, "risk", f"resume: cleared {', '.join(cleared) or 'nothing'}; trading {state}",
                    "good" if state == "ACTIVE" else "warn")

    def confirm_live(self, typed: str, phrase: str) -> bool:
        ok = typed.strip() == phrase
        if ok:
            self.live_confirmed = True
            self.ports.log(self._now(), "risk", "LIVE trading confirmed", "warn")
        return ok

    # ------------------------------------------------------------------ market hooks

    def before_market(self, ev: MarketData) -> None:
        """Latency-delayed orders due by now fill on the book as it stands before this message."""
        reports = self.executor.poll(self._now())
        for rep in reports:
            self.handle(rep)
        if reports:
            self._watch()

    def on_trade(self, t: Trade) -> None:
        reports = self.executor.on_trade(t)
        for rep in reports:
            self.handle(rep)
        if reports:
            self._watch()

    def housekeeping(self, now: int) -> None:
        """Once a second or so: due orders, the day's PnL against the loss limit, ledger retries."""
        for rep in self.executor.poll(now):
            self.handle(rep)
        self._watch()
        self._check_day(now)
        if self.ledger.healthy or self.ledger.flush():
            self.risk.clear_cause(CAUSE_LEDGER, now)

    def on_book_state(self, symbol: str, state: BookState, reason: str, now: int) -> None:
        traded = symbol == self.ports.primary() or symbol in self.portfolio.positions or any(
            o.request.symbol == symbol for o in self.open.values())
        if traded or state is BookState.LIVE:
            self.risk.on_book_state(symbol, state, reason, now)

    # ------------------------------------------------------------------ reports

    def _on_async_report(self, rep: ExecReport) -> None:
        """Reports the executor delivers by itself (live results, resolutions)."""
        try:
            self.handle(rep)
        finally:
            self._watch()

    def _on_venue_halt(self, error: str, reason: str) -> None:
        """The venue stopped trading by itself (keys refused at start, start attempts spent):
        HALTED, with this one message (the state change is what is logged and shown)."""
        self.errors += 1
        now = self._now()
        if error in AUTH_ERROR_NAMES:
            self.risk.set_cause(CAUSE_AUTH, TradingState.HALTED,
                                f"{redact(reason)}; live trading halted - check TRADEDESK_API_KEY / "
                                "TRADEDESK_API_SECRET and restart", now)
        else:
            self.risk.set_cause(CAUSE_VENUE, TradingState.HALTED, redact(reason), now)

    def handle(self, rep: ExecReport) -> None:
        """Journal a venue report, apply its new fills once, then publish."""
        oo = self.open.get(rep.client_id)
        if oo is None:
            row = self.ledger.order(rep.client_id)
            if row is None:
                log.warning("report for an order this ledger never sent: %s", rep.client_id)
                return
            # A late report for a finished order (e.g. a fill that raced a cancel): its fills still count.
            req = OrderRequest(rep.client_id, row["symbol"], Side(row["side"]), Decimal(row["qty"]),
                               OrderType(row["type"]), None, row["reason"], row["decision_id"], row["created_ns"])
            oo = OpenOrder(req, OrderState(row["state"]), Decimal(row["filled_qty"]))
        new = [f for f in rep.fills if f.fill_id not in self.applied and f.fill_id not in oo.fill_ids]
        filled = oo.filled + sum((f.qty for f in new), ZERO)
        state = rep.state
        if state is OrderState.OPEN and filled >= oo.request.qty:
            state = OrderState.FILLED
        if oo.state.terminal and not state.terminal:
            state = oo.state  # never reopen a finished order
        detail = redact(rep.reason)
        self.ledger.record_outcome(ExecReport(rep.client_id, state, rep.ts, tuple(new), detail, rep.exchange_id,
                                              rep.error), state, filled, detail)
        if new:
            failpoints.hit("after_fill")
        oo.filled, oo.state = filled, state
        oo.fill_ids.update(f.fill_id for f in new)
        if state.terminal:
            self.open.pop(rep.client_id, None)
            self.reconciling.discard(rep.client_id)
        elif state is OrderState.UNKNOWN:
            self.reconciling.add(rep.client_id)
        else:
            self.open[rep.client_id] = oo
            self.reconciling.discard(rep.client_id)
        events: list[PositionOpened | PositionClosed] = []
        if new:
            events = self._apply(new, oo.request.decision_id)
            failpoints.hit("after_position")
        # Everything is written: now tell the world.
        for f in new:
            self.ports.publish(f)
        for ev in events:
            self.ports.publish(ev)
        self._report_log(oo, rep, state, new, events, detail)
        if state is OrderState.REJECTED or rep.error:
            self.errors += 1
            if rep.error in AUTH_ERROR_NAMES:
                self.risk.set_cause(CAUSE_AUTH, TradingState.HALTED,
                                    f"exchange refused the API credentials ({rep.error}); live trading halted - "
                                    "check TRADEDESK_API_KEY / TRADEDESK_API_SECRET", rep.ts)
            else:
                self.risk.order_error(detail or state.value, rep.ts)
        elif new:
            self.risk.order_ok()
        if new:
            self._check_day(rep.ts)

    def _apply(self, fills: list[OrderFilled], decision_id: int | None) -> list[PositionOpened | PositionClosed]:
        pf = self.portfolio
        events: list[PositionOpened | PositionClosed] = []
        touched: dict[str, Any] = {}
        policy, pf.allow_short = pf.allow_short, True  # a fill that happened is applied in full; policy is the gate's
        try:
            for f in fills:
                events.extend(pf.apply_fill(f, decision_id))
                self.applied.add(f.fill_id)
                self.fills.append(f)
                self.cash -= f.price * f.qty * f.side.sign + f.fee
                touched[f.symbol] = None
        finally:
            pf.allow_short = policy
        for sym in touched:
            touched[sym] = pf.positions.get(sym)
        self.ledger.record_applied([f.fill_id for f in fills], touched,
                                   [ev for ev in events if isinstance(ev, PositionClosed)])
        return events

    def _report_log(self, oo: OpenOrder, rep: ExecReport, state: OrderState, new: list[OrderFilled],
                    events: list[PositionOpened | PositionClosed], detail: str) -> None:
        log_line = self.ports.log
        req = oo.request
        src = req.reason
        sym = display_symbol(req.symbol)
        if new:
            avg = vwap(new)
            qty = sum((f.qty for f in new), ZERO)
            fee = sum((f.fee for f in new), ZERO)
            slip = ""
            if req.ref_price and req.order_type is OrderType.MARKET:
                bps = abs(avg - req.ref_price) / req.ref_price * 10_000  # never better than the touch it was priced at
                if (avg - req.ref_price) * req.side.sign < 0:
                    bps = -bps  # the book moved our way during the latency
                slip = f", slippage {bps:+.2f} bps"
                self.slippage_bps.append(float(bps))
            part = f" ({detail})" if state is not OrderState.FILLED and detail else ""
            levels = f" over {len(new)} levels" if len(new) > 1 else ""
            log_line(rep.ts, src, f"{req.side.value} {qty} {sym} @ {avg:.2f}{levels} (fee {fee:.4f}{slip}){part}",
                     "good")
            self.ports.mark_fill(Marker(rep.ts, float(avg), req.side.value, True))
        elif state is OrderState.REJECTED:
            self.denials += 1
            self.last_denial = f"rejected: {detail}"
            denied = OrderDenied(req.symbol, req.side, req.qty, f"rejected by the venue: {detail}", rep.ts, src,
                                 "rejected")
            self.ledger.record_denial(denied)
            self.ports.publish(denied)
            log_line(rep.ts, src, f"{req.side.value} {req.qty} {sym} rejected: {detail}", "error")
            log.warning("order %s %s %s %s rejected: %s", req.client_id, req.side.value, req.qty, sym, detail)
        elif state is OrderState.UNKNOWN:
            log_line(rep.ts, src, f"{req.side.value} {req.qty} {sym}: outcome UNKNOWN ({detail}); resolving by "
                                  f"client order id, never resending", "warn")
        elif state is OrderState.CANCELED:
            log_line(rep.ts, src, f"{req.side.value} {req.qty} {sym} canceled{': ' + detail if detail else ''}", "info")
        elif state is OrderState.OPEN and not new:
            log_line(rep.ts, src, f"{req.side.value} {req.qty} {sym} {detail or 'resting'}", "info")
        for ev in events:
            if isinstance(ev, PositionClosed):
                log_line(ev.exit_ts, src, f"closed {ev.side.value} {display_symbol(ev.symbol)} #{ev.position_id}: "
                                          f"PnL {ev.realised_pnl:+.4f} (fees {ev.fees:.4f})",
                         "good" if ev.realised_pnl >= 0 else "error")

    def _deny(self, cmd: SubmitOrder, d: Denial, now: int) -> OrderResult:
        self.denials += 1
        self.last_denial = d.reason
        ev = OrderDenied(cmd.symbol, cmd.side, cmd.qty, d.reason, now, cmd.reason, d.code)
        self.ledger.record_denial(ev)
        self.ports.publish(ev)
        self.ports.log(now, cmd.reason, f"{cmd.side.value} {cmd.qty} {display_symbol(cmd.symbol)} denied: {d.reason}",
                       "warn")
        log.info("%s order %s %s %s denied (%s): %s", cmd.reason, cmd.side.value, cmd.qty, cmd.symbol, d.code, d.reason)
        return OrderResult(False, reason=d.reason)

    def _on_state_change(self, state: TradingState, reason: str, now: int) -> None:
        """Journal, log and publish a trading state change (the engine turns automatic trading
        off on HALTED when it hears of it)."""
        self.ledger.record_trading_state(state.value, reason, now)
        self.ports.log(now, "risk", f"trading {state.value}: {reason}",
                       "good" if state is TradingState.ACTIVE else "error")
        log.warning("trading %s: %s", state.value, reason)
        self.ports.publish(TradingStateChanged(state.value, reason, now))

    # ------------------------------------------------------------------ day PnL

    def day_pnl(self, now: int) -> Decimal:
        """Realised since UTC midnight (by the engine clock) + unrealised now − fees paid on open positions."""
        pf = self.portfolio
        key = now // DAY_NS
        if key != self._day_key:
            self._day_key = key
            start = key * DAY_NS
            self._day_base = pf.realised_pnl - sum((c.realised_pnl for c in pf.closed if c.exit_ts >= start), ZERO)
        open_fees = sum((p.fees for p in pf.positions.values()), ZERO)
        return pf.realised_pnl - self._day_base + pf.unrealised(self.ports.marks()) - open_fees

    def _check_day(self, now: int) -> None:
        pnl = self.day_pnl(now)
        self.risk.update_day_pnl(pnl, self._day_key, now)

    # ------------------------------------------------------------------ restart

    def _restore(self) -> None:
        """Rebuild the account from the fill ledger and take back unfinished orders."""
        led = self.ledger
        fills = led.load_fills()
        pf = self.portfolio
        pf.allow_short = True  # the ledger says what happened; policy applies to new orders only
        for f, decision_id in fills:
            pf.apply_fill(f, decision_id)
            self.applied.add(f.fill_id)
            self.fills.append(f)
            self.cash -= f.price * f.qty * f.side.sign + f.fee
        pf.allow_short = self.allow_short
        stored = led.stored_positions()
        stats = led.stats()
        mismatched = []
        for sym in set(stored) | set(pf.positions):
            a, b = stored.get(sym), pf.positions.get(sym)
            if (a is None) != (b is None) or (a is not None and b is not None and (a.qty, a.side) != (b.qty, b.side)):
                mismatched.append(sym)
        if mismatched or stats.unapplied_fills:
            # The stored positions lag the fills when a crash hit between the two commits:
            # the fills are the truth, so the table is rewritten from them.
            led.record_applied([f.fill_id for f, _ in fills],
                               {sym: pf.positions.get(sym) for sym in set(stored) | set(pf.positions)},
                               pf.closed)
        self.position_mismatches = len(mismatched)
        now = self._now()
        resolved = 0
        for oo in led.open_orders():
            cid = oo.request.client_id
            oo.filled = sum((f.qty for f, _ in fills if f.order_id == cid), ZERO)
            if oo.state is OrderState.OPEN or self.live:
                self.open[cid] = oo
                if oo.state is not OrderState.OPEN:
                    oo.state = OrderState.UNKNOWN
                    self.reconciling.add(cid)
                self.executor.restore(oo)
            else:
                # The paper venue lived in the process that died: an order it never answered
                # did not execute (its fills would be in the ledger, committed with the answer).
                state = OrderState.CANCELED if oo.filled > 0 else OrderState.REJECTED
                why = "the paper venue stopped before it answered; nothing executed"
                led.record_outcome(ExecReport(cid, state, now, reason=why), state, oo.filled, why)
                resolved += 1
        self._watch()
        self.restored = {
            "fills": len(fills), "orders": stats.orders, "open_positions": len(pf.positions),
            "closed_positions": len(pf.closed), "realised_pnl": str(pf.realised_pnl),
            "resting_orders": sum(1 for o in self.open.values() if o.state is OrderState.OPEN),
            "unknown_orders": len(self.reconciling), "paper_orders_resolved": resolved,
            "positions_repaired": len(mismatched), "unapplied_fills": stats.unapplied_fills,
        }
        if fills or stats.orders:
            self.ports.log(now, "ledger", f"restored {len(fills)} fills, {len(pf.positions)} open position(s), realised PnL "
                                  f"{pf.realised_pnl:+.4f}" + (f", {len(self.reconciling)} order(s) to resolve"
                                                               if self.reconciling else ""), "info")

    def shutdown(self) -> None:
        self.ledger.close()

"""Positions: the open position(s), closed trades with realised PnL and fees, session totals."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from engine.core.snapshot import ClosedView, DeskSnapshot
from tui import format as fmt
from tui.widgets.cached import CachedStatic

#: Closed trades kept in the table (the snapshot carries the last 50).
MAX_CLOSED_ROWS = 50


def pnl_style(x: object) -> str:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return "green" if v > 0 else "red" if v < 0 else ""


def side_word(side: str) -> str:
    """A position's side as a trader says it: a BUY position is long, a SELL one short."""
    return {"BUY": "LONG", "SELL": "SHORT"}.get(side, side)


class PositionsPane(Vertical):
    """Open positions, closed trades (a table updated by row key) and the session totals."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._closed_ids: list[int] = []
        self.flat_hint = "flat"

    def compose(self) -> ComposeResult:
        yield CachedStatic("", fixed_size=True, id="open-positions")
        table: DataTable[Text | str] = DataTable(id="closed-trades", cursor_type="none", zebra_stripes=True)
        yield table
        yield Static(Text("no closed trades yet", style="dim"), id="closed-empty")
        yield CachedStatic("", fixed_size=True, id="session-totals")

    def on_mount(self) -> None:
        table = self.query_one("#closed-trades", DataTable)
        # Realised PnL right after the side: on a narrow desk the columns after it scroll off.
        for key, label in (("id", "#"), ("side", "side"), ("pnl", "realised"), ("qty", "qty"),
                           ("entry", "entry"), ("exit", "exit"), ("fees", "fees")):
            table.add_column(label, key=key)

    def show(self, snap: DeskSnapshot, live: bool) -> None:
        self._show_open(snap, live)
        self._show_closed(snap.closed)
        totals = Text()
        totals.append("session PnL ", style="dim")
        totals.append(fmt.signed(snap.realised_pnl), style=pnl_style(snap.realised_pnl))
        totals.append("  uPnL ", style="dim")
        totals.append(fmt.signed(snap.unrealised_pnl), style="dim" if not live else pnl_style(snap.unrealised_pnl))
        totals.append("\nfees ", style="dim")
        totals.append(fmt.price(snap.fees, 4))
        totals.append("  balance ", style="dim")
        totals.append(fmt.price(snap.balance))
        self.query_one("#session-totals", CachedStatic).show(totals)

    def _show_open(self, snap: DeskSnapshot, live: bool) -> None:
        out = Text()
        if not snap.positions:
            out.append(self.flat_hint, style="dim")
        for i, p in enumerate(snap.positions):
            if i:
                out.append("\n")
            out.append(f"{side_word(p.side)} ", style="bold green" if p.side == "BUY" else "bold red")
            out.append(f"{fmt.qty(p.qty)} {p.symbol} @ {fmt.price(p.entry_price)}\n")
            # A mark from a book that is not LIVE is not a live number: dim it and say so.
            mark_style = "" if live else "dim"
            out.append("mark ", style="dim")
            out.append(fmt.price(p.mark), style=mark_style)
            out.append("  uPnL ", style="dim")
            out.append(fmt.signed(p.unrealised), style=pnl_style(p.unrealised) if live else "dim")
            if not live:
                out.append("  (book not live)", style="dim yellow")
        if snap.open_orders:
            # Orders not finished yet: in flight (paper latency), resting, or UNKNOWN (live).
            out.append("\nworking ", style="dim")
            for i, o in enumerate(snap.open_orders[:3]):
                if i:
                    out.append(", ", style="dim")
                at = f" @ {fmt.price(o.limit_price)}" if o.limit_price is not None else ""
                out.append(f"{o.side} {fmt.qty(o.qty - o.filled)} {o.symbol}{at} ")
                out.append(o.state, style="bold red" if o.state == "UNKNOWN" else "yellow")
            if len(snap.open_orders) > 3:
                out.append(f" +{len(snap.open_orders) - 3} more", style="dim")
        self.query_one("#open-positions", CachedStatic).show(out)

    def _show_closed(self, closed: tuple[ClosedView, ...]) -> None:
        table = self.query_one("#closed-trades", DataTable)
        known = set(self._closed_ids)
        added = False
        for c in closed:
            if c.position_id in known:
                continue  # closed trades never change: add once, by key
            table.add_row(
                str(c.position_id),
                Text(side_word(c.side), style="green" if c.side == "BUY" else "red"),
                Text(fmt.signed(c.realised_pnl), style=pnl_style(c.realised_pnl)),
                fmt.qty(c.qty),
                fmt.price(c.entry_price, grouping=False),
                fmt.price(c.exit_price, grouping=False),
                fmt.price(c.fees, 4),
                key=str(c.position_id),
            )
            self._closed_ids.append(c.position_id)
            known.add(c.position_id)
            if len(self._closed_ids) > MAX_CLOSED_ROWS:
                table.remove_row(str(self._closed_ids.pop(0)))
            added = True
        if added:
            # Newest first, like a trade blotter: the latest close is always in view.
            table.sort("id", key=lambda pid: int(str(pid)), reverse=True)
        self.query_one("#closed-empty", Static).display = not self._closed_ids

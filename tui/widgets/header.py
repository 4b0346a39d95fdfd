"""The desk header (symbol, price, feeds, mode, trading state) and the alert banner."""

from __future__ import annotations

from rich.text import Text

from engine.core.snapshot import DeskSnapshot, SymbolView
from tui import format as fmt
from tui.widgets.cached import CachedStatic

STATE_STYLE = {"LIVE": "bold green", "SYNCING": "bold yellow", "STALE": "bold red"}
SEP = ("  │  ", "dim")


def primary_view(snap: DeskSnapshot) -> SymbolView | None:
    for v in snap.symbols:
        if v.symbol == snap.primary:
            return v
    return None


def is_live(snap: DeskSnapshot) -> bool:
    """Whether the primary's numbers are live: its book is LIVE."""
    v = primary_view(snap)
    return v is not None and v.book_state == "LIVE"


def quote_of(display: str) -> str:
    return display.split("/", 1)[1] if "/" in display else ""


class DeskHeader(CachedStatic):
    """The market and the desk state (one line when wide, two when narrow), then every
    stream's book state and last message age."""

    def show_snapshot(self, snap: DeskSnapshot, feed_note: str = "") -> None:
        market, desk = self._market_part(snap), self._desk_part(snap)
        # On a narrow desk (the screen's -narrow class, where the header is 3 lines high)
        # the desk state gets its own line rather than being cropped.
        narrow = self.screen.has_class("-narrow")
        lines = [market, desk] if narrow else [Text.assemble(market, SEP, desk)]
        lines.append(self._feeds_line(snap, feed_note))
        out = Text("\n", no_wrap=True, overflow="ellipsis").join(lines)
        out.no_wrap, out.overflow = True, "ellipsis"
        self.show(out)

    def _market_part(self, snap: DeskSnapshot) -> Text:
        v = primary_view(snap)
        out = Text()
        if v is None:
            out.append(f"{snap.primary}", style="bold")
            out.append("  waiting for market data", style="dim italic")
        else:
            live = v.book_state == "LIVE"
            num = "bold" if live else "dim"  # a number from a book that is not LIVE must not look live
            out.append(f"{v.display} ", style="bold")
            out.append(fmt.price(v.last_price), style=num)
            if v.change_pct is not None:
                style = ("green" if v.change_pct >= 0 else "red") if live else "dim"
                out.append(f"  session {v.change_pct:+.2f}%", style=style)
            out.append("  spread ", style="dim")
            out.append(fmt.price(v.spread), style="" if live else "dim")
            if not live:
                out.append(f"  book {v.book_state}", style=STATE_STYLE.get(v.book_state, "bold red"))
        return out

    def _desk_part(self, snap: DeskSnapshot) -> Text:
        v = primary_view(snap)
        out = Text()
        out.append(snap.mode, style="bold cyan")
        if snap.replay.get("paused"):
            out.append(" PAUSED", style="bold yellow reverse")
        if snap.replay.get("done"):
            out.append(" finished", style="yellow")
        out.append(*SEP)
        out.append("trading ", style="dim")
        out.append(snap.trading_state, style="bold green" if snap.trading_state == "ACTIVE" else "bold red reverse")
        out.append("  auto ", style="dim")
        out.append("ON" if snap.auto_trade else "off", style="bold green" if snap.auto_trade else "yellow")
        out.append("  training ", style="dim")
        out.append("ON" if snap.training else "off", style="bold green" if snap.training else "yellow")
        out.append("  size ", style="dim")
        quote = quote_of(v.display) if v is not None else ""
        out.append(f"{fmt.qty(snap.order_notional)} {quote}".rstrip(), style="bold")
        out.append(*SEP)
        out.append(snap.device or "device ?", style="magenta")
        return out

    def _feeds_line(self, snap: DeskSnapshot, feed_note: str) -> Text:
        out = Text()
        if not snap.symbols:
            out.append("feeds: no messages yet", style="dim italic")
        streams = snap.feed.get("streams")
        streams = streams if isinstance(streams, dict) else {}
        shown: set[str] = set()
        for i, v in enumerate(snap.symbols):
            if i:
                out.append("  ·  ", style="dim")
            out.append(f"{v.display} ", style="bold" if v.symbol == snap.primary else "")
            out.append("book ", style="dim")
            out.append(v.book_state, style=STATE_STYLE.get(v.book_state, "bold red"))
            mine = _symbol_streams(v.symbol, streams)
            if mine:
                # Live: each stream's own state and last message age (trade, depth, best bid/ask).
                for label, name, view in mine:
                    shown.add(name)
                    state = str(view.get("state", ""))
                    age = view.get("age_s")
                    out.append(f" {label} ", style="dim")
                    out.append(fmt.age(float(age)) if isinstance(age, (int, float)) else "never",
                               style="" if state == "LIVE" else STATE_STYLE.get(state, "bold red"))
            else:
                out.append(f" {fmt.age(v.last_msg_age_s)}", style="dim")
            out.append(f" {v.trades:,} trades", style="dim")
        others = [view for name, view in streams.items() if name not in shown and isinstance(view, dict)]
        if others:
            bad = sum(1 for o in others if o.get("state") != "LIVE")
            out.append(*SEP)
            out.append(f"{len(others)} venue streams", style="dim")
            if bad:
                out.append(f" ({bad} not live)", style="bold yellow")
        warming = snap.feed.get("warming_up")
        if isinstance(warming, (list, tuple)) and warming:
            out.append(*SEP)
            out.append("warming up " + " ".join(map(str, warming)), style="yellow")
        status = snap.feed.get("status")
        if isinstance(status, str) and status:
            out.append(*SEP)
            bad_status = any(w in status.lower() for w in ("stopped", "disconnect", "retry", "error", "offline"))
            out.append(f"feed: {status}", style="bold red" if bad_status else "dim")
        if snap.mode.startswith("REPLAY"):
            out.append(*SEP)
            out.append(f"replay {snap.counters.get('messages', 0):,} msgs", style="dim")
        if feed_note:
            out.append(*SEP)
            out.append(feed_note, style="yellow")
        return out


#: Binance stream suffix -> short label for the header.
STREAM_LABELS = (("@trade", "trade"), ("@depth", "depth"), ("@bookTicker", "bbo"))


def _symbol_streams(symbol: str, streams: dict[str, object]) -> list[tuple[str, str, dict[str, object]]]:
    """The symbol's Binance streams as (label, stream name, view), in a fixed order."""
    out = []
    prefix = symbol.lower() + "@"
    for suffix, label in STREAM_LABELS:
        for name, view in streams.items():
            if name.startswith(prefix) and name[len(symbol):].startswith(suffix) and isinstance(view, dict):
                out.append((label, name, view))
                break
    return out


class Banner(CachedStatic):
    """A full-width line for HALTED / STALE / disconnected / replay finished; hidden otherwise."""

    def show_banner(self, text: str, level: str) -> None:
        self.display = bool(text)
        self.set_class(level == "alert", "-alert")
        self.set_class(level == "info", "-info")
        self.show(text)

"""Modal dialogs: help (the keys as currently mapped), the quit and live confirmations.

Their styles live beside them in ``dialogs.tcss`` (each dialog's ``CSS_PATH``)."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class HelpScreen(ModalScreen[bool]):
    """The desk's keys (after any remapping from settings) and what each pane shows."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q,enter", "close", "Close", show=False),
    ]

    def __init__(self, keys: list[tuple[str, str]], notes: list[str]) -> None:
        super().__init__()
        self.rows = keys
        self._notes = notes

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, text in self.rows:
            table.add_row(key, text)
        # Scrolls on a small terminal rather than cutting the list off.
        with VerticalScroll(id="help-box"):
            yield Label("tradedesk — keys", id="help-title")
            yield Static(table, id="help-keys")
            yield Static(Text("\n".join(self._notes), style="dim"), id="help-notes")
            yield Label("esc / ? closes", id="help-hint")

    def action_close(self) -> None:
        self.dismiss(True)


class ConfirmQuit(ModalScreen[bool]):
    """Asked only when a position is open: quitting leaves it open on the account."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Quit", show=False),
        Binding("n,escape", "answer(False)", "Stay", show=False),
    ]

    def __init__(self, detail: str) -> None:
        super().__init__()
        self._detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Label("A position is open — quit anyway?", id="confirm-title")
            yield Static(Text(self._detail), id="confirm-detail")
            with Horizontal(id="confirm-buttons"):
                yield Button("Quit (y)", variant="error", id="confirm-yes")
                yield Button("Stay (n)", variant="primary", id="confirm-no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, quit_: bool) -> None:
        self.dismiss(quit_)


class ConfirmLive(ModalScreen[str | None]):
    """Live orders go out only after the user types the exchange's confirmation phrase.

    Returns what was typed (the engine decides whether it matches), or None on escape.
    """

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Not now", show=False),
    ]

    def __init__(self, phrase: str) -> None:
        super().__init__()
        self.phrase = phrase

    def compose(self) -> ComposeResult:
        with Vertical(id="live-box"):
            yield Label("LIVE trading: real orders on the exchange", id="live-title")
            yield Static(Text.assemble("Type ", (self.phrase, "bold"), " and press enter to enable live orders.\n"
                                       "Escape keeps them off; b or s asks again."), id="live-detail")
            yield Input(placeholder=self.phrase, id="live-input")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)

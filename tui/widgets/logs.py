"""Bounded logs fed from the snapshot: the signal log and the training events log.

Each refresh appends only the lines that are new since the last one. ``LogLine`` objects
are immutable and the engine's ring hands the same objects to every snapshot, so the
last line shown marks where to resume; nothing is cleared and rebuilt per refresh.

Lines wrap to the log's width when written, so the log keeps its own bounded copy of
the lines and rewraps them only when its width changes (a resize, or a pane that was
hidden on a small terminal being shown again).
"""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual import events
from textual.widgets import RichLog

from engine.core.snapshot import LogLine
from tui.format import hms

LEVEL_STYLE = {"info": "", "good": "green", "warn": "yellow", "error": "bold red"}


class EventLog(RichLog):
    """A RichLog that appends the new tail of a snapshot's log lines."""

    def __init__(self, waiting: str, *, max_lines: int = 500, id: str | None = None) -> None:
        super().__init__(max_lines=max_lines, wrap=True, markup=False, auto_scroll=True, min_width=20, id=id)
        self.waiting = waiting
        self._last: LogLine | None = None
        self._lines: deque[Text] = deque(maxlen=max_lines)
        self._written_width = 0
        self._pending = False
        self.lines_written = 0

    def on_mount(self) -> None:
        self._rewrite()

    def on_resize(self, event: events.Resize) -> None:
        self._sync()

    def _sync(self) -> None:
        """Rewrap when the width changed or lines arrived while hidden (cheap when neither)."""
        if self.display and (self._pending or self.size.width != self._written_width):
            self._rewrite()

    def _rewrite(self) -> None:
        if not self.display or self.size.width <= 0:
            return  # hidden: write when shown, at the width it then has
        self._written_width = self.size.width
        self._pending = False
        self.clear()
        if not self._lines:
            self.write(Text(self.waiting, style="dim italic"))
        for text in self._lines:
            self.write(text)

    def set_waiting(self, text: str) -> None:
        """Change what the empty log says it waits for (only while it is empty)."""
        if not self._lines and text != self.waiting:
            self.waiting = text
            self._rewrite()

    def show(self, lines: tuple[LogLine, ...]) -> None:
        self._sync()
        if not lines:
            return
        start = 0
        if self._last is not None:
            # Search from the end: the resume point is almost always near the tail.
            for i in range(len(lines) - 1, -1, -1):
                if lines[i] is self._last:
                    start = i + 1
                    break
            else:
                # More lines arrived than the snapshot window holds; say so, do not pretend.
                self._write(Text("… earlier lines skipped (more than the log window arrived)", style="dim"))
        new = lines[start:]
        if not new:
            return
        for line in new:
            self._write(format_line(line))
        self._last = lines[-1]

    def note(self, source: str, text: str, level: str = "warn", ts: int = 0) -> None:
        """A line from the desk itself (e.g. why a key press did nothing)."""
        self._write(format_line(LogLine(ts, source, text, level)))

    def plain_lines(self) -> list[str]:
        """Every line kept, as plain text (tests, copying)."""
        return [t.plain for t in self._lines]

    def _write(self, text: Text) -> None:
        first = not self._lines
        self._lines.append(text)
        self.lines_written += 1
        if not self.display or self._written_width == 0:
            self._pending = True  # hidden or not laid out yet: written by _rewrite when shown
            return
        if first:
            self.clear()  # drop the "waiting for ..." line
        self.write(text)


def format_line(line: LogLine) -> Text:
    out = Text(no_wrap=False)
    out.append(hms(line.ts), style="dim")
    out.append(f" {line.source:<7.7} ", style="cyan")
    out.append(line.text, style=LEVEL_STYLE.get(line.level, ""))
    return out

"""A Static that skips updates whose content did not change (most refreshes change nothing)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class CachedStatic(Static):
    """``show(text)`` re-renders only when the text (characters and styles) differs.

    With ``fixed_size`` (its size set in CSS, not by its content) an update repaints the
    widget alone instead of asking for a new layout of the whole screen, which is most of
    the cost of a refresh.
    """

    def __init__(self, text: Text | str = "", *, fixed_size: bool = False, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(text, id=id, classes=classes)
        self._shown: Text | str = text
        self._fixed_size = fixed_size

    def show(self, text: Text | str) -> None:
        if text == self._shown:
            return
        self._shown = text
        self.update(text, layout=not self._fixed_size)

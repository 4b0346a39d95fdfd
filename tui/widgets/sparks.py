"""Sparklines of the last minutes per second: price, volume and top-5 book imbalance."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Sparkline

from engine.core.snapshot import DeskSnapshot


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


class SparkRow(Horizontal):
    """A label, a sparkline and the latest value."""

    DEFAULT_CSS = """
    SparkRow { height: 1; }
    SparkRow > .spark-name { width: 10; color: $text-muted; }
    SparkRow > Sparkline { width: 1fr; height: 1; }
    SparkRow > .spark-value { width: 14; text-align: right; }
    """

    def __init__(self, name: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._name = name

    def compose(self) -> ComposeResult:
        yield Label(self._name or "", classes="spark-name")
        # Mean per column: a bucket of seconds is summarised by its average, not its peak.
        yield Sparkline([], summary_function=_mean)
        yield Label("", classes="spark-value")

    def show(self, data: Sequence[float], value: str) -> None:
        self.query_one(Sparkline).data = list(data)
        self.query_one(".spark-value", Label).update(value, layout=False)  # fixed width in CSS


class MarketSparks(Vertical):
    """Price, volume and imbalance per second; updated only when a new 1 s bar closed."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._key: object = None

    def compose(self) -> ComposeResult:
        yield Label("waiting for the first 1s bars", classes="spark-wait")
        yield SparkRow("price", id="spark-price")
        yield SparkRow("volume", id="spark-volume")
        yield SparkRow("imbalance", id="spark-imbalance")

    def show(self, snap: DeskSnapshot) -> None:
        secs = snap.seconds
        key = (len(secs), secs[-1].open_time if secs else 0, len(snap.imbalance))
        if key == self._key:
            return
        self._key = key
        ready = len(secs) >= 2
        self.query_one(".spark-wait", Label).display = not ready
        for row in self.query(SparkRow):
            row.display = ready
        if not ready:
            return
        closes = [c.close for c in secs]
        vols = [c.volume for c in secs]
        self.query_one("#spark-price", SparkRow).show(closes, f"{closes[-1]:,.2f}")
        self.query_one("#spark-volume", SparkRow).show(vols, f"{vols[-1]:.4g}/s")
        imb = snap.imbalance
        self.query_one("#spark-imbalance", SparkRow).show(imb, f"{imb[-1]:+.2f}" if imb else "—")

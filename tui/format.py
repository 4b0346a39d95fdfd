"""Number and time formatting shared by the desk's widgets.

Prices and money arrive as ``Decimal`` from the snapshot; they are formatted here and
never converted through binary floats on the way to the screen.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

NS_PER_S = 1_000_000_000

#: What the desk shows where a value does not exist yet (not a made-up number).
NONE = "—"


def hms(ts_ns: int, seconds: bool = True) -> str:
    """Exchange/recorded time as ``HH:MM:SS`` UTC (the recordings and Binance are UTC)."""
    if ts_ns <= 0:
        return "--:--:--" if seconds else "--:--"
    dt = datetime.fromtimestamp(ts_ns / NS_PER_S, tz=UTC)
    return dt.strftime("%H:%M:%S" if seconds else "%H:%M")


def price(p: Decimal | float | None, places: int = 2, grouping: bool = True) -> str:
    if p is None:
        return NONE
    return f"{p:,.{places}f}" if grouping else f"{p:.{places}f}"


def signed(x: Decimal | float | None, places: int = 4) -> str:
    if x is None:
        return NONE
    return f"{x:+,.{places}f}"


def qty(q: Decimal | None) -> str:
    """A quantity without trailing zeros (0.00162, not 0.00162000)."""
    if q is None:
        return NONE
    text = f"{q:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def age(seconds: float | None) -> str:
    """Message age: ``0.3s``, ``12s``, ``4m``; ``never`` before the first message."""
    if seconds is None:
        return "never"
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def compact(v: object) -> str:
    """A model-status value in a few characters: booleans, counts, losses, lists."""
    if v is None:
        return NONE
    if isinstance(v, bool):
        return "ON" if v else "off"
    if isinstance(v, int):
        if abs(v) >= 10_000_000:
            return f"{v / 1e6:.0f}M"
        if abs(v) >= 100_000:
            return f"{v / 1e6:.2f}M" if abs(v) >= 1_000_000 else f"{v / 1e3:.0f}k"
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:  # NaN: say so rather than print a number
            return "NaN"
        if v == 0:
            return "0"
        if abs(v) >= 1000 or abs(v) < 0.001:
            return f"{v:.3g}"
        return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 1 else f"{v:.3f}"
    if isinstance(v, Decimal):
        return qty(v)
    if isinstance(v, (list, tuple)):
        nums = [x for x in v if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if nums and len(nums) == len(v):
            return spark_text(nums)
        return ", ".join(compact(x) for x in v)
    if isinstance(v, dict):
        return " ".join(f"{k}={compact(x)}" for k, x in v.items())
    return str(v)


_BLOCKS = "▁▂▃▄▅▆▇█"


def spark_text(values: list[float] | tuple[float, ...], width: int = 12) -> str:
    """A one-line block sparkline of the last ``width`` values (loss trends in a table cell)."""
    vals = [float(x) for x in values[-width:] if x == x]
    if not vals:
        return NONE
    lo, hi = min(vals), max(vals)
    if hi == lo:
        return _BLOCKS[3] * len(vals)
    scale = (len(_BLOCKS) - 1) / (hi - lo)
    return "".join(_BLOCKS[int((x - lo) * scale)] for x in vals)

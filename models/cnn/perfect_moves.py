"""Perfect-move labelling: zig-zag swing extrema found in hindsight, used only once known.

A trough (BUY) or peak (SELL) is only a fact once price has moved ``threshold`` away
from it; that moment is the label's ``known_time``. The streaming labeller emits a label
exactly then and never earlier, so nothing a model trains on at time ``t`` depends on a
price after ``t``. The training-sample builder uses only labels known at ``now`` and
features of bars that had closed by the extremum bar's close.

Times are integers in one unit (the engine uses ns) and must be the time a bar's close
and features became known, i.e. the bar's close time (``open_time + width``), not its open.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.common.schema import BUY, CNN_TIMEFRAMES, HOLD, SELL, WINDOW

#: Seed swing threshold (2 %); configurable per timeframe.
DEFAULT_THRESHOLD = 0.02


@dataclass(frozen=True, slots=True)
class Label:
    """A confirmed swing extremum: BUY at a trough, SELL at a peak."""

    timeframe: str
    action: int  # BUY (trough) or SELL (peak)
    extremum_time: int  # close time of the extremum bar
    extremum_price: float
    extremum_index: int  # 0-based count of updates fed to the labeller
    known_time: int  # close time of the bar that confirmed it
    known_index: int
    confirm_move: float  # fractional move from the extremum at confirmation (>= threshold)

    @property
    def kind(self) -> str:
        return "trough" if self.action == BUY else "peak"


class PerfectMoveLabeller:
    """Streaming zig-zag over one timeframe's closes; ``update`` returns newly confirmed labels."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, timeframe: str = "") -> None:
        if not (0.0 < threshold < 1.0) or not math.isfinite(threshold):
            raise ValueError(f"swing threshold must be a fraction in (0, 1), got {threshold!r}")
        self.threshold = float(threshold)
        self.timeframe = timeframe
        self._n = 0
        self._last_t: int | None = None
        self._trend = 0  # 0 unknown, +1 rising (seeking a peak), -1 falling (seeking a trough)
        self._hi = self._lo = (0.0, 0, 0)  # (price, time, index) of the running extremes

    def update(self, t: int, close: float) -> list[Label]:
        """Feed one bar close; returns the labels that this close confirms (0 or 1)."""
        close = float(close)
        if not math.isfinite(close) or close <= 0.0:
            raise ValueError(f"close must be a finite positive price, got {close!r}")
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"time went backwards: {t} < {self._last_t}")
        i, self._n, self._last_t = self._n, self._n + 1, t
        point, th = (close, t, i), self.threshold
        out: list[Label] = []
        if i == 0:
            self._hi = self._lo = point
            return out
        if self._trend >= 0 and close > self._hi[0]:
            self._hi = point
        if self._trend <= 0 and close < self._lo[0]:
            self._lo = point
        if self._trend <= 0 and close >= self._lo[0] * (1.0 + th) and self._lo[2] < i:
            out.append(self._label(BUY, self._lo, point))
            self._trend, self._hi = 1, point
        elif self._trend >= 0 and close <= self._hi[0] * (1.0 - th) and self._hi[2] < i:
            out.append(self._label(SELL, self._hi, point))
            self._trend, self._lo = -1, point
        return out

    def _label(self, action: int, ext: tuple[float, int, int], now: tuple[float, int, int]) -> Label:
        return Label(
            timeframe=self.timeframe,
            action=action,
            extremum_time=ext[1],
            extremum_price=ext[0],
            extremum_index=ext[2],
            known_time=now[1],
            known_index=now[2],
            confirm_move=abs(now[0] / ext[0] - 1.0),
        )


def label_series(
    times: Sequence[int] | np.ndarray,
    closes: Sequence[float] | np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    timeframe: str = "",
) -> list[Label]:
    """All labels confirmed within a series (the last, unconfirmed swing is not included)."""
    lab = PerfectMoveLabeller(threshold, timeframe)
    out: list[Label] = []
    for t, c in zip(times, closes, strict=True):
        out += lab.update(int(t), float(c))
    return out


def trade_outcome_target(action: int, reward: float, neutral_band: float = 0.0) -> int | None:
    """What the CNN should have said for a closed trade (seed 000 ``mark_perfect_move``).

    Reward above the band: the action was right; below: the opposite was; inside: HOLD.
    ``None`` when there is nothing to learn (a HOLD that lost, or a non-finite reward).
    """
    if not math.isfinite(reward):
        return None
    if reward > neutral_band:
        return action
    if reward < -neutral_band:
        return {BUY: SELL, SELL: BUY}.get(action)
    return HOLD


@dataclass(frozen=True, slots=True)
class CNNSamples:
    """Supervised CNN batch: ``targets`` is -1 where a head has no label."""

    bars: np.ndarray  # float32 [N, n_tf, WINDOW, F]
    valid: np.ndarray  # bool [N, n_tf]
    targets: np.ndarray  # int64 [N, n_tf]
    weights: np.ndarray  # float32 [N]
    times: np.ndarray  # int64 [N], anchor (extremum or HOLD bar close) time

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def build_cnn_samples(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    labels: Iterable[Label],
    now: int,
    *,
    hold_per_extremum: float = 1.0,
    hold_margin: int = 2,
    weight: float = 1.0,
    seed: int = 0,
    timeframes: Sequence[str] = CNN_TIMEFRAMES,
    window: int = WINDOW,
    min_bars: int = 5,
) -> CNNSamples:
    """Perfect-move training samples from labels known at or before ``now``.

    series: timeframe -> (close_times int [T], features float [T, F]), ascending times.
    Each sample is anchored at a bar close time ``T0``; every timeframe's window is its
    last ``window`` rows closed at or before ``T0`` (so no feature postdates the anchor),
    zero-padded at the old end while fewer than ``window`` have closed, and a timeframe
    counts once it has ``min_bars`` rows — the rule the desk applies online,
    and only the anchor timeframe's head is labelled: BUY at troughs, SELL at peaks, HOLD
    at bars sampled from the settled stretch (up to the last known extremum, at least
    ``hold_margin`` bars from any extremum), ``hold_per_extremum`` HOLDs per extremum.
    """
    rng = np.random.default_rng(seed)
    tf_pos = {tf: k for k, tf in enumerate(timeframes)}
    known = [lb for lb in labels if lb.known_time <= now and lb.timeframe in series]
    anchors: list[tuple[str, int, int]] = []  # (timeframe, anchor time, target)
    for tf in {lb.timeframe for lb in known}:
        if tf not in tf_pos:
            raise ValueError(f"label timeframe {tf!r} has no CNN head; heads: {tuple(timeframes)}")
        times = np.asarray(series[tf][0])
        ext = sorted(lb.extremum_time for lb in known if lb.timeframe == tf)
        anchors += [(tf, lb.extremum_time, lb.action) for lb in known if lb.timeframe == tf]
        ext_rows = np.searchsorted(times, np.asarray(ext), side="left")
        settled = int(np.searchsorted(times, ext[-1], side="right"))  # rows up to last extremum
        rows = np.arange(min_bars - 1, settled)
        if len(rows) and len(ext_rows):
            dist = np.abs(rows[:, None] - ext_rows[None, :]).min(axis=1)
            rows = rows[dist > hold_margin]
        n_hold = min(len(rows), round(hold_per_extremum * len(ext)))
        for r in rng.choice(rows, size=n_hold, replace=False) if n_hold else []:
            anchors.append((tf, int(times[r]), HOLD))

    n_tf = len(timeframes)
    n_feat = next(iter(series.values()))[1].shape[1] if series else 0
    bars = np.zeros((len(anchors), n_tf, window, n_feat), np.float32)
    valid = np.zeros((len(anchors), n_tf), bool)
    targets = np.full((len(anchors), n_tf), -1, np.int64)
    keep = np.zeros(len(anchors), bool)
    for n, (tf, t0, target) in enumerate(anchors):
        for other, k in tf_pos.items():
            if other not in series:
                continue
            times, feats = series[other]
            j = int(np.searchsorted(times, t0, side="right"))
            lo = max(0, j - window)
            if j >= min_bars and np.isfinite(feats[lo:j]).all():
                bars[n, k, window - (j - lo):] = feats[lo:j]
                valid[n, k] = True
        k0 = tf_pos[tf]
        if valid[n, k0]:  # the labelled timeframe needs a full, finite window
            targets[n, k0] = target
            keep[n] = True
    return CNNSamples(
        bars=bars[keep],
        valid=valid[keep],
        targets=targets[keep],
        weights=np.full(int(keep.sum()), weight, np.float32),
        times=np.asarray([a[1] for a in anchors], np.int64)[keep] if anchors else np.zeros(0, np.int64),
    )

"""Perfect-move labels: only once confirmed, never from the future."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.cnn.perfect_moves import (
    PerfectMoveLabeller,
    build_cnn_samples,
    label_series,
    trade_outcome_target,
)
from models.common.schema import BUY, CNN_TIMEFRAMES, HOLD, N_BAR_FEATURES, SELL, WINDOW


def walk(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
    times = 60 * (np.arange(n) + 1)  # close times of 1m bars, in seconds
    return times, closes


def test_zigzag_on_a_known_series() -> None:
    lab = PerfectMoveLabeller(0.02, "1m")
    prices = [100, 101, 101.5, 101, 100.5, 99.4, 99, 98, 99, 99.9, 100.1]
    emitted = [(i, lab.update(i, p)) for i, p in enumerate(prices)]
    labels = [(i, lb) for i, out in emitted for lb in out]
    assert [(i, lb.action, lb.extremum_index, lb.extremum_price) for i, lb in labels] == [
        (5, SELL, 2, 101.5),  # 99.4 <= 101.5 * 0.98 confirms the peak
        (10, BUY, 7, 98.0),  # 100.1 >= 98 * 1.02 confirms the trough (99.9 did not)
    ]
    assert labels[0][1].kind == "peak"
    assert labels[0][1].known_time == 5


def test_labels_are_emitted_exactly_at_confirmation_never_before() -> None:
    th = 0.015
    times, closes = walk()
    labels = label_series(times, closes, th, "1m")
    assert len(labels) > 20
    assert all(a.action != b.action for a, b in itertools.pairwise(labels))  # peaks and troughs alternate
    for lb in labels:
        e, k = lb.extremum_index, lb.known_index
        assert k > e
        assert lb.known_time > lb.extremum_time
        move = np.abs(closes[e + 1 : k + 1] / closes[e] - 1.0)
        assert move[-1] >= th
        assert (move[:-1] < th).all()
        seg = closes[e : k + 1]
        assert closes[e] == (seg.max() if lb.action == SELL else seg.min())


def test_no_look_ahead_labels_known_by_t_ignore_later_prices() -> None:
    times, closes = walk(seed=1)
    rng = np.random.default_rng(2)
    for cut in (500, 1234, 2500):
        t = times[cut]
        perturbed = closes.copy()
        perturbed[cut + 1 :] *= np.exp(rng.normal(0, 0.05, len(closes) - cut - 1))
        a = [lb for lb in label_series(times, closes, 0.02) if lb.known_time <= t]
        b = [lb for lb in label_series(times, perturbed, 0.02) if lb.known_time <= t]
        assert a == b
        assert len(a) > 3


def test_labeller_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="threshold"):
        PerfectMoveLabeller(0.0)
    lab = PerfectMoveLabeller(0.02)
    lab.update(10, 100.0)
    with pytest.raises(ValueError, match="finite positive"):
        lab.update(11, float("nan"))
    with pytest.raises(ValueError, match="backwards"):
        lab.update(5, 100.0)


def series_for(times: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    feats = np.random.default_rng(seed).standard_normal((len(times), N_BAR_FEATURES)).astype(np.float32)
    return times, feats


def test_cnn_samples_use_only_labels_known_by_now_and_no_future_features() -> None:
    times, closes = walk(seed=3)
    labels = label_series(times, closes, 0.015, "1m")
    t5 = times[4::5]  # 5m bars close every fifth minute
    series = {"1m": series_for(times, 0), "5m": series_for(t5, 1)}
    now = int(times[1800])
    s = build_cnn_samples(series, labels, now, seed=0)
    # A head counts once its timeframe has min_bars (5) bars, online and offline alike.
    known = [lb for lb in labels if lb.known_time <= now and lb.extremum_index >= 5 - 1]
    k1m = CNN_TIMEFRAMES.index("1m")
    tg = s.targets[:, k1m]
    assert (tg == BUY).sum() + (tg == SELL).sum() == len(known)
    assert (tg == HOLD).sum() > 0
    assert (s.targets[:, CNN_TIMEFRAMES.index("5m")] == -1).all()
    assert (s.times <= now).all()
    for n in range(len(s)):  # the 1m window ends exactly at the anchor bar, zero-padded while short
        row = int(np.searchsorted(times, s.times[n]))
        lo = max(0, row - WINDOW + 1)
        got = s.bars[n, k1m]
        assert np.array_equal(got[WINDOW - (row + 1 - lo):], series["1m"][1][lo : row + 1])
        assert not got[: WINDOW - (row + 1 - lo)].any()
    assert s.valid[:, CNN_TIMEFRAMES.index("5m")].any()
    assert not s.valid[:, CNN_TIMEFRAMES.index("1d")].any()
    # perturbing anything after `now` (prices and features) changes nothing
    closes2 = closes.copy()
    closes2[1801:] *= 1.3
    f1 = series["1m"][1].copy()
    f1[1801:] += 5.0
    f5 = series["5m"][1].copy()
    f5[t5 > now] -= 7.0
    s2 = build_cnn_samples({"1m": (times, f1), "5m": (t5, f5)}, label_series(times, closes2, 0.015, "1m"), now, seed=0)
    for a, b in ((s.bars, s2.bars), (s.targets, s2.targets), (s.valid, s2.valid), (s.times, s2.times)):
        assert np.array_equal(a, b)


def test_cnn_samples_train_the_cnn() -> None:
    from models.cnn.cnn_agent import CNNAgent

    times, closes = walk(seed=4, n=1500)
    s = build_cnn_samples({"1m": series_for(times, 0)}, label_series(times, closes, 0.015, "1m"), int(times[-1]))
    agent = CNNAgent()
    losses = agent.fit(s, epochs=2, batch_size=16)
    assert losses
    assert agent.training_steps == len(losses)


def test_trade_outcome_target() -> None:
    assert trade_outcome_target(BUY, 0.5) == BUY
    assert trade_outcome_target(BUY, -0.5) == SELL
    assert trade_outcome_target(SELL, -0.5) == BUY
    assert trade_outcome_target(SELL, 0.001, neutral_band=0.02) == HOLD
    assert trade_outcome_target(HOLD, -1.0) is None
    assert trade_outcome_target(BUY, float("nan")) is None

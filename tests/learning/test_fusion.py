"""Fusion: weights renormalise over available models; thresholds decide; nothing invented."""

from __future__ import annotations

import pytest

from engine.learning.fusion import ModelSignal, cnn_score, decide, fuse, signed_score

W = {"cnn": 0.7, "dqn": 0.15, "cob": 0.15}


def sig(model, score, action="HOLD", conf=0.5):
    return ModelSignal(model, action, conf, score, 0)


def test_weighted_mean_and_contributions():
    f = fuse({"cnn": sig("cnn", 0.5, "BUY"), "dqn": sig("dqn", -1.0, "SELL"), "cob": sig("cob", 0.0)}, W)
    assert f.score == pytest.approx(0.7 * 0.5 - 0.15)
    assert {c.model: c.weight for c in f.contributions} == pytest.approx(W)
    assert {c.model: c.action for c in f.contributions} == {"cnn": "BUY", "dqn": "SELL", "cob": "HOLD"}


def test_missing_model_drops_out_and_weights_renormalise():
    f = fuse({"dqn": sig("dqn", 1.0), "cob": sig("cob", 0.0)}, W)
    assert f.score == pytest.approx(0.5)
    assert sum(c.weight for c in f.contributions) == pytest.approx(1.0)
    assert {c.model for c in f.contributions} == {"dqn", "cob"}


def test_no_model_means_no_decision():
    assert fuse({}, W) is None
    assert fuse({"dqn": sig("dqn", 1.0)}, {"cnn": 1.0, "dqn": 0.0}) is None


@pytest.mark.parametrize(
    ("score", "position", "short", "expected"),
    [
        (0.25, None, True, "BUY"),
        (0.19, None, True, "HOLD"),
        (-0.2, None, True, "SELL"),
        (-0.2, None, False, "HOLD"),
        (-0.1, "BUY", True, "CLOSE"),
        (-0.05, "BUY", True, "HOLD"),
        (0.9, "BUY", True, "HOLD"),
        (0.1, "SELL", True, "CLOSE"),
        (-0.9, "SELL", True, "HOLD"),
    ],
)
def test_decide(score, position, short, expected):
    assert decide(score, position, 0.2, 0.1, short) == expected


def test_cnn_score_uses_timeframe_weights_of_valid_heads():
    per_tf = {"1m": (1.0, (1.0, 0.0, 0.0)), "1h": (0.5, (0.0, 0.0, 1.0))}
    tfw = {"1m": 0.05, "1h": 0.25, "1d": 0.2}
    assert cnn_score(per_tf, tfw) == pytest.approx((0.05 * 1.0 - 0.25 * 0.5) / 0.30)
    assert signed_score((0.2, 0.5, 0.3)) == pytest.approx(-0.05)  # (0.2 - 0.3) x (1 - 0.5)
    assert signed_score((0.9, 0.05, 0.05)) == pytest.approx(0.85 * 0.95)

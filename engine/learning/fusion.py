"""Decision fusion: a weighted vote of the available models' signals.

Each model's signal becomes a signed score in [-1, 1] (probability of BUY minus
probability of SELL, times the probability of not holding; the CNN's heads are first
combined with the per-timeframe weights and their confidences). The fused score is the weighted mean over the models that are
available now — toggled-off, unloaded, failing or stale models drop out and the weights
renormalise. No available model means no decision: fusion never invents one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.core.events import Contribution


@dataclass(frozen=True, slots=True)
class ModelSignal:
    model: str
    action: str  # BUY / HOLD / SELL
    confidence: float
    score: float  # signed, [-1, 1]
    ts: int
    probs: tuple[float, float, float] | None = None  # BUY, HOLD, SELL


def signed_score(probs: tuple[float, float, float]) -> float:
    """(P(BUY) - P(SELL)) x (1 - P(HOLD)): how far the model leans to one side, discounted by
    how much it would rather do nothing (a model that mostly holds does not open positions
    on the small difference between its two minority actions)."""
    return float((probs[0] - probs[2]) * (1.0 - probs[1]))


def cnn_score(per_tf: Mapping[str, tuple[float, tuple[float, float, float]]], tf_weights: Mapping[str, float]) -> float:
    """Combine CNN heads: Σ w_tf · conf_tf · signed_score(p_tf) / Σ w_tf over the valid heads."""
    total_w = sum(tf_weights.get(tf, 0.0) for tf in per_tf)
    if total_w <= 0:
        return 0.0
    return sum(tf_weights.get(tf, 0.0) * conf * signed_score(p) for tf, (conf, p) in per_tf.items()) / total_w


@dataclass(frozen=True, slots=True)
class Fused:
    score: float
    contributions: tuple[Contribution, ...]


def fuse(signals: Mapping[str, ModelSignal], weights: Mapping[str, float]) -> Fused | None:
    """Weighted mean of the given signals' scores; ``None`` when none has weight."""
    usable = {m: s for m, s in signals.items() if weights.get(m, 0.0) > 0}
    total = sum(weights[m] for m in usable)
    if not usable or total <= 0:
        return None
    contribs = tuple(Contribution(m, s.action, s.confidence, weights[m] / total) for m, s in sorted(usable.items()))
    score = sum(weights[m] / total * s.score for m, s in usable.items())
    return Fused(score, contribs)


def decide(score: float, position: str | None, open_threshold: float, close_threshold: float,
           allow_short: bool) -> str:
    """``BUY``, ``SELL``, ``CLOSE`` or ``HOLD`` for a fused score and the current position.

    Flat: open long at score ≥ open threshold, short at ≤ -open threshold (if allowed).
    Long: close at score ≤ -close threshold. Short: close at score ≥ close threshold.
    """
    if position is None:
        if score >= open_threshold:
            return "BUY"
        if score <= -open_threshold and allow_short:
            return "SELL"
        return "HOLD"
    if position == "BUY" and score <= -close_threshold:
        return "CLOSE"
    if position == "SELL" and score >= close_threshold:
        return "CLOSE"
    return "HOLD"

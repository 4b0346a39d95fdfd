"""What the engine hands the models, and what they hand back.

The engine builds a :class:`ModelInputs` on its side from numpy arrays; the models never
see engine objects. :class:`Prediction` is the uniform answer of every agent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.common.schema import CNN_TIMEFRAMES, COB_INPUT, DQN_INPUT, N_BAR_FEATURES, WINDOW


class PredictionRefused(Exception):
    """A model declined to predict; the engine counts these and drops the model from fusion."""


class NonFiniteInputError(PredictionRefused):
    """Inputs held NaN or infinity; predicting on them would propagate garbage."""


class InputNotReadyError(PredictionRefused):
    """No usable input yet (e.g. every CNN timeframe is still warming up)."""


@dataclass(frozen=True, slots=True)
class ModelInputs:
    """One decision's worth of features, built by the engine.

    bars:       float32 [len(CNN_TIMEFRAMES), WINDOW, N_BAR_FEATURES], oldest bar first.
    bars_valid: bool [len(CNN_TIMEFRAMES)]; False while a timeframe warms up. The rows
                of an invalid timeframe are ignored (they may hold zeros or NaN).
    cob:        float32 [COB_INPUT], levels then COB_EXTRA (see models.common.schema).
    dqn_state:  float32 [DQN_INPUT], last DQN_BARS bars of DQN_TIMEFRAME (1 s), COB_EXTRA, position state.
    """

    bars: np.ndarray
    bars_valid: np.ndarray
    cob: np.ndarray
    dqn_state: np.ndarray

    def __post_init__(self) -> None:
        n_tf = len(CNN_TIMEFRAMES)
        expect = {
            "bars": (n_tf, WINDOW, N_BAR_FEATURES),
            "bars_valid": (n_tf,),
            "cob": (COB_INPUT,),
            "dqn_state": (DQN_INPUT,),
        }
        for name, shape in expect.items():
            got = np.shape(getattr(self, name))
            if got != shape:
                raise ValueError(
                    f"ModelInputs.{name} has shape {got}, expected {shape}; build it from "
                    "models.common.schema (CNN_TIMEFRAMES, WINDOW, N_BAR_FEATURES, COB_INPUT, DQN_INPUT)"
                )

    @classmethod
    def zeros(cls, valid: bool = True) -> ModelInputs:
        """All-zero inputs (tests, warm-up, benchmarks)."""
        n_tf = len(CNN_TIMEFRAMES)
        return cls(
            bars=np.zeros((n_tf, WINDOW, N_BAR_FEATURES), np.float32),
            bars_valid=np.full(n_tf, valid, dtype=bool),
            cob=np.zeros(COB_INPUT, np.float32),
            dqn_state=np.zeros(DQN_INPUT, np.float32),
        )


@dataclass(frozen=True, slots=True)
class TimeframePrediction:
    """One CNN head's answer for one timeframe."""

    action: int
    confidence: float
    probs: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Prediction:
    """A model's answer for one decision.

    action:     index into models.common.schema.ACTIONS (BUY, HOLD, SELL).
    confidence: in [0, 1]; CNN: its confidence head combined over valid timeframes;
                DQN/COB: the probability of the chosen action.
    probs:      action probabilities (BUY, HOLD, SELL), summing to 1.
    per_tf:     CNN only: valid timeframes only, name -> TimeframePrediction.
    value:      DQN: max Q; COB: value estimate; CNN: None.
    explored:   DQN only: the action was drawn by epsilon-greedy exploration.
    latency_ms: wall time of the inference call.
    """

    action: int
    confidence: float
    probs: tuple[float, float, float]
    per_tf: dict[str, TimeframePrediction] | None = None
    value: float | None = None
    explored: bool = False
    latency_ms: float = 0.0

"""The COB model's agent: a policy over the order book, trained by actor-critic from the
rewards of the positions its signal contributed to."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from models.cob.cob_net import COBConfig, COBNet, a2c_loss
from models.common.base_agent import Agent, _finite
from models.common.inputs import ModelInputs, NonFiniteInputError, Prediction, PredictionRefused


class COBAgent(Agent):
    """Order-book policy/value network trained by one-step actor-critic from rewards."""

    kind = "cob"
    config: COBConfig

    def __init__(
        self,
        preset: str = "small",
        device: str | torch.device = "cpu",
        seed: int = 0,
        config: COBConfig | None = None,
        name: str = "COB",
    ) -> None:
        super().__init__(name, preset, config or COBConfig.preset(preset), device, seed)

    def _build(self) -> nn.Module:
        return COBNet(self.config)

    def predict(self, inputs: ModelInputs, sample: bool = False) -> Prediction:
        """Greedy (or, with ``sample``, drawn) action from the policy head; value from the critic."""
        t0 = time.perf_counter()
        cob = np.asarray(inputs.cob)
        if not _finite(cob):
            raise self._refuse(NonFiniteInputError(f"{self.name}: non-finite book features"))
        logits, value = self._infer(self._tensor(cob)[None])
        out = torch.cat([torch.softmax(logits[0].float(), -1), value.float()]).cpu().numpy().astype(np.float64)
        if not _finite(out):
            raise self._refuse(PredictionRefused(f"{self.name}: non-finite output"))
        probs = out[:3] / out[:3].sum()
        action = int(self.np_rng.choice(3, p=probs)) if sample else int(probs.argmax())
        ms = self._record_prediction(t0)
        return Prediction(
            action,
            float(probs[action]),
            (float(probs[0]), float(probs[1]), float(probs[2])),
            value=float(out[3]),
            latency_ms=ms,
        )

    def train_batch(self, cob: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> float | None:
        """One actor-critic step on N (book, action, reward) triples."""
        with self._train_lock:
            cob = np.asarray(cob, np.float32)
            rewards = np.asarray(rewards, np.float32)
            if not (_finite(cob) and _finite(rewards)):
                self._skip("non-finite input")
                return None
            x, r = self._tensor(cob), self._tensor(rewards)
            a = torch.from_numpy(np.asarray(actions, np.int64)).to(self.device)

            def compute() -> tuple[torch.Tensor, None]:
                logits, value = self.learner(x)
                return a2c_loss(logits, value, a, r, self.config), None

            loss, _ = self._guarded_update(compute)
            return loss

    def train_on_reward(
        self, inputs: ModelInputs, action: int, reward: float, *, scale: float = 1.0, **_: Any
    ) -> float | None:
        """Learn from the reward of the position this model's signal contributed to."""
        if not (math.isfinite(reward) and math.isfinite(scale)):
            self._skip("non-finite reward")
            return None
        self.last_reward = reward
        return self.train_batch(np.asarray(inputs.cob)[None], np.array([action]), np.array([reward * scale]))

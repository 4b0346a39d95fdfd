"""The COB model's agent: a policy over the order book, trained by actor-critic from the
rewards of the positions its signal contributed to."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from models.cob.cob_net import COBConfig, COBNet, policy_loss
from models.common.base_agent import Agent, CheckpointShape, _finite, outcome_buffer_problem
from models.common.inputs import ModelInputs, NonFiniteInputError, Prediction, PredictionRefused
from models.common.outcome_buffer import OutcomeBuffer


class COBAgent(Agent):
    """Order-book policy/value network trained by actor-critic from outcomes and
    counterfactuals, replayed from an outcome buffer."""

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
        self.buffer = OutcomeBuffer(self.config.buffer_capacity, self.buffer_fields(self.config), seed=seed)

    @staticmethod
    def buffer_fields(c: COBConfig) -> dict[str, tuple[tuple[int, ...], type]]:
        return {"cob": ((c.input_dim,), np.float32), "rewards": ((3,), np.float32),
                "known": ((3,), np.bool_), "weight": ((), np.float32)}

    @classmethod
    def network(cls, config: COBConfig) -> nn.Module:
        return COBNet(config)

    @classmethod
    def _extra_problem(cls, extra: dict[str, Any], config: COBConfig, shape: CheckpointShape) -> str | None:
        return outcome_buffer_problem(extra, cls.buffer_fields(config))

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

    def _learn(self, cob: np.ndarray, rewards: np.ndarray, known: np.ndarray, weight: float) -> float | None:
        """Keep the sample, then a few minibatch updates from the outcome buffer."""
        cob = np.asarray(cob, np.float32)
        rewards = np.asarray(rewards, np.float32)
        if not (_finite(cob) and _finite(rewards) and math.isfinite(weight)):
            self._skip("non-finite input")
            return None
        if weight <= 0:
            self._wait("no credit")
            return None
        with self._train_lock:
            self.buffer.add(cob=cob, rewards=rewards, known=known, weight=weight)
            losses = []
            for _ in range(self.config.updates_per_outcome):
                b = self.buffer.sample(min(self.config.batch_size, len(self.buffer)))
                loss = self._step(b["cob"], b["rewards"], b["known"], b["weight"])
                if loss is not None:
                    losses.append(loss)
            return sum(losses) / len(losses) if losses else None

    def _step(self, cob: np.ndarray, rewards: np.ndarray, known: np.ndarray, weights: np.ndarray) -> float | None:
        x, r, w = self._tensor(cob), self._tensor(rewards), self._tensor(weights)
        k = torch.from_numpy(np.asarray(known, bool)).to(self.device)

        def compute() -> tuple[torch.Tensor, None]:
            logits, value = self.learner(x)
            return policy_loss(logits, value, r, k, w, self.config), None

        loss, _ = self._guarded_update(compute)
        return loss

    def train_batch(self, cob: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> float | None:
        """One actor-critic step on N (book, action, reward) triples (no buffer)."""
        with self._train_lock:
            cob = np.asarray(cob, np.float32)
            rewards = np.asarray(rewards, np.float32)
            if not (_finite(cob) and _finite(rewards)):
                self._skip("non-finite input")
                return None
            n = len(cob)
            full = np.zeros((n, 3), np.float32)
            known = np.zeros((n, 3), bool)
            full[np.arange(n), actions] = rewards
            known[np.arange(n), actions] = True
            return self._step(cob, full, known, np.ones(n, np.float32))

    def train_on_reward(
        self, inputs: ModelInputs, action: int, reward: float, *, scale: float = 1.0, **_: Any
    ) -> float | None:
        """Learn from the reward of the position this model's signal opened or helped open."""
        if not (math.isfinite(reward) and math.isfinite(scale)):
            self._skip("non-finite reward")
            return None
        self.last_reward = reward
        rewards = np.zeros(3, np.float32)
        rewards[action] = reward
        known = np.zeros(3, bool)
        known[action] = True
        return self._learn(np.asarray(inputs.cob), rewards, known, abs(scale))

    def train_on_counterfactual(self, inputs: ModelInputs, rewards: tuple[float, float, float], *,
                                scale: float = 1.0) -> float | None:
        """Every action's reward from this book is known: the exact policy gradient."""
        r = np.asarray(rewards, np.float32)
        if not (_finite(r) and math.isfinite(scale)):
            self._skip("non-finite reward")
            return None
        return self._learn(np.asarray(inputs.cob), r, np.ones(3, bool), abs(scale))

    def _extra_state(self) -> dict[str, Any]:
        return {"buffer": {k: torch.from_numpy(v) for k, v in self.buffer.state().items()},
                "buffer_rng": self.buffer.rng.bit_generator.state}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        buf = extra.get("buffer")
        if isinstance(buf, dict):
            self.buffer.load_state({k: np.asarray(v) for k, v in buf.items()})
        if isinstance(extra.get("buffer_rng"), dict):
            self.buffer.rng.bit_generator.state = extra["buffer_rng"]

"""The CNN's agent: batch-1 prediction over valid timeframe heads, supervised updates on
perfect moves (``fit``) and on closed trades (``train_on_reward``, weighted x10)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from models.cnn.multitimeframe_cnn import CNNConfig, MultiTimeframeCNN, cnn_loss
from models.cnn.perfect_moves import CNNSamples, trade_outcome_target
from models.common.base_agent import Agent, CheckpointShape, _finite, outcome_buffer_problem
from models.common.inputs import (
    InputNotReadyError,
    ModelInputs,
    NonFiniteInputError,
    Prediction,
    PredictionRefused,
    TimeframePrediction,
)
from models.common.outcome_buffer import OutcomeBuffer


class CNNAgent(Agent):
    """Multi-timeframe CNN: per-timeframe BUY/HOLD/SELL heads with confidences.

    Online it learns from confirmed perfect moves (:meth:`train_on_label`), closed trades
    (×10) and counterfactuals; every sample is kept in an outcome buffer and replayed in
    later minibatches. Offline, :meth:`fit` trains on a whole labelled set.
    """

    learns_from_labels = True

    kind = "cnn"
    config: CNNConfig

    def __init__(
        self,
        preset: str = "small",
        device: str | torch.device = "cpu",
        seed: int = 0,
        config: CNNConfig | None = None,
        name: str = "CNN",
    ) -> None:
        super().__init__(name, preset, config or CNNConfig.preset(preset), device, seed)
        self.n_tf = len(self.config.timeframes)
        self.buffer = OutcomeBuffer(self.config.buffer_capacity, self.buffer_fields(self.config), seed=seed)

    @staticmethod
    def buffer_fields(c: CNNConfig) -> dict[str, tuple[tuple[int, ...], type]]:
        n_tf = len(c.timeframes)
        return {"bars": ((n_tf, c.window, c.n_features), np.float16), "valid": ((n_tf,), np.bool_),
                "targets": ((n_tf,), np.int64), "weight": ((), np.float32)}

    @classmethod
    def network(cls, config: CNNConfig) -> nn.Module:
        return MultiTimeframeCNN(config)

    @classmethod
    def _extra_problem(cls, extra: dict[str, Any], config: CNNConfig, shape: CheckpointShape) -> str | None:
        problem = outcome_buffer_problem(extra, cls.buffer_fields(config))
        if problem is None and "buffer" in extra:
            targets = np.asarray(extra["buffer"]["targets"])
            if targets.size and not ((targets >= -1).all() and (targets < 3).all()):
                return "field extra.buffer.targets: expected -1 (no label) or an action 0..2"
        return problem

    def predict(self, inputs: ModelInputs) -> Prediction:
        """Combine valid heads: probs = sum(w*c*p)/sum(w*c); confidence = sum(w*c*p[a])/sum(w).

        Weights are ``config.timeframe_weights`` renormalised over valid timeframes;
        heads of invalid (warming-up) timeframes are neither computed on nor reported.
        """
        t0 = time.perf_counter()
        valid = np.asarray(inputs.bars_valid, dtype=bool)
        if not valid.any():
            raise self._refuse(InputNotReadyError(f"{self.name}: every timeframe is still warming up"))
        bars = np.asarray(inputs.bars)
        if not _finite(bars[valid]):
            raise self._refuse(NonFiniteInputError(f"{self.name}: non-finite bar features"))
        if not valid.all():  # warming-up rows may hold NaN: zero them so no kernel ever reads one
            bars = np.where(valid[:, None, None], bars, 0.0)
        logits, conf_logit = self._infer(self._tensor(bars)[None])
        head = torch.cat([torch.softmax(logits[0], -1), torch.sigmoid(conf_logit[0])[:, None]], -1)
        out = head.float().cpu().numpy()  # one device sync for all heads
        if not _finite(out[valid]):
            raise self._refuse(PredictionRefused(f"{self.name}: non-finite output"))
        per_tf: dict[str, TimeframePrediction] = {}
        w = np.array(
            [
                self.config.timeframe_weights.get(tf, 0.0) if valid[k] else 0.0
                for k, tf in enumerate(self.config.timeframes)
            ]
        )
        if w.sum() <= 0:  # timeframes without a configured weight still count equally
            w = valid.astype(np.float64)
        w = w / w.sum()
        for k, tf in enumerate(self.config.timeframes):
            if valid[k]:
                p = out[k, :3]
                per_tf[tf] = TimeframePrediction(
                    int(p.argmax()), float(out[k, 3]), (float(p[0]), float(p[1]), float(p[2]))
                )
        wc = w * out[:, 3]
        mix = (wc[:, None] * out[:, :3]).sum(0)
        probs = mix / mix.sum() if mix.sum() > 0 else (w[:, None] * out[:, :3]).sum(0)
        action = int(probs.argmax())
        confidence = float(np.clip((wc * out[:, action]).sum(), 0.0, 1.0))
        ms = self._record_prediction(t0)
        return Prediction(
            action, confidence, (float(probs[0]), float(probs[1]), float(probs[2])), per_tf=per_tf, latency_ms=ms
        )

    def train_supervised(
        self, bars: np.ndarray, valid: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None
    ) -> float | None:
        """One optimizer step on a batch; ``targets`` [N, n_tf] with -1 = no label.

        Returns the loss, or None when skipped (non-finite inputs/loss/gradients) or when
        nothing is labelled.
        """
        with self._train_lock:
            bars = np.asarray(bars, np.float32)
            valid = np.asarray(valid, bool)
            targets = np.where(valid, np.asarray(targets, np.int64), -1)  # invalid heads learn nothing
            weights = np.ones(len(bars), np.float32) if weights is None else np.asarray(weights, np.float32)
            if not (targets >= 0).any():
                self._wait("no labelled head: every timeframe is still warming up")
                return None
            if not _finite(bars[valid]) or not _finite(weights):
                self._skip("non-finite input")
                return None
            bars = np.where(valid[:, :, None, None], bars, 0.0).astype(np.float32)
            x, y, w = self._tensor(bars), torch.from_numpy(targets).to(self.device), self._tensor(weights)

            def compute() -> tuple[torch.Tensor, None]:
                logits, conf = self.learner(x)
                return cnn_loss(logits, conf, y, w, self.config.confidence_loss_weight), None

            dead = ~valid.any(axis=0)  # timeframes absent from the whole batch

            def keep_dead_stats(before: dict[str, torch.Tensor]) -> None:
                # Zero-filled rows of absent timeframes must not drag their BatchNorm
                # running statistics toward zero; their channels are put back.
                if not dead.any():
                    return
                with torch.no_grad():
                    for name, buf in self.learner.named_buffers():
                        if buf.dim() == 1 and buf.numel() % self.n_tf == 0:
                            c = buf.numel() // self.n_tf
                            for k in np.flatnonzero(dead):
                                buf[k * c : (k + 1) * c] = before[name][k * c : (k + 1) * c]

            loss, _ = self._guarded_update(compute, keep_dead_stats)
            return loss

    def fit(
        self,
        samples: CNNSamples,
        epochs: int = 1,
        batch_size: int = 64,
        progress: Callable[[int, int, float | None], None] | None = None,
    ) -> list[float]:
        """Mini-batch training over ``samples`` (shuffled by the agent's seeded RNG)."""
        losses: list[float] = []
        n = len(samples)
        total = epochs * math.ceil(n / batch_size) if n else 0
        done = 0
        for _ in range(epochs):
            order = self.np_rng.permutation(n)
            for s in range(0, n, batch_size):
                idx = order[s : s + batch_size]
                loss = self.train_supervised(
                    samples.bars[idx], samples.valid[idx], samples.targets[idx], samples.weights[idx]
                )
                if loss is not None:
                    losses.append(loss)
                done += 1
                if progress:
                    progress(done, total, loss)
        return losses

    def _learn(self, bars: np.ndarray, valid: np.ndarray, targets: np.ndarray, weight: float) -> float | None:
        """Keep one sample, then minibatch updates from the outcome buffer (the new one in each)."""
        bars = np.asarray(bars, np.float32)
        valid = np.asarray(valid, bool)
        targets = np.where(valid, np.asarray(targets, np.int64), -1)
        if not (targets >= 0).any():
            self._wait("no labelled head: every timeframe is still warming up")
            return None
        if not _finite(bars[valid]) or not math.isfinite(weight):
            self._skip("non-finite input")
            return None
        with self._train_lock:
            self.buffer.add(bars=np.where(valid[:, None, None], bars, 0.0), valid=valid, targets=targets,
                            weight=weight)
            losses = []
            for _ in range(self.config.updates_per_outcome):
                b = self.buffer.sample(min(self.config.batch_size, len(self.buffer)))
                loss = self.train_supervised(b["bars"].astype(np.float32), b["valid"], b["targets"], b["weight"])
                if loss is not None:
                    losses.append(loss)
            return sum(losses) / len(losses) if losses else None

    def train_on_label(self, inputs: ModelInputs, timeframe: int, action: int, *, weight: float = 1.0) -> float | None:
        """A confirmed perfect move: ``action`` (BUY at a trough, SELL at a peak, HOLD between)
        on head ``timeframe`` only, from the bars as they were at the extremum."""
        valid = np.asarray(inputs.bars_valid, bool)
        if not valid[timeframe]:
            self._wait(f"{self.config.timeframes[timeframe]} is still warming up")
            return None
        targets = np.full(self.n_tf, -1, np.int64)
        targets[timeframe] = action
        return self._learn(np.asarray(inputs.bars), valid, targets, weight)

    def train_on_counterfactual(self, inputs: ModelInputs, rewards: tuple[float, float, float], *,
                                scale: float = 1.0) -> float | None:
        """The best of BUY / HOLD / SELL from these bars (HOLD when neither side beats 0 after fees),
        on every valid head."""
        r = np.asarray(rewards, np.float64)
        if not (_finite(r) and math.isfinite(scale)):
            self._skip("non-finite reward")
            return None
        valid = np.asarray(inputs.bars_valid, bool)
        targets = np.where(valid, int(r.argmax()), -1)
        return self._learn(np.asarray(inputs.bars), valid, targets, self.config.counterfactual_weight * abs(scale))

    def _extra_state(self) -> dict[str, Any]:
        return {"buffer": {k: torch.from_numpy(v) for k, v in self.buffer.state().items()},
                "buffer_rng": self.buffer.rng.bit_generator.state}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        buf = extra.get("buffer")
        if isinstance(buf, dict):
            self.buffer.load_state({k: np.asarray(v) for k, v in buf.items()})
        if isinstance(extra.get("buffer_rng"), dict):
            self.buffer.rng.bit_generator.state = extra["buffer_rng"]

    def train_on_reward(
        self,
        inputs: ModelInputs,
        action: int,
        reward: float,
        *,
        scale: float = 1.0,
        neutral_band: float = 0.0,
        **_: Any,
    ) -> float | None:
        """Learn from a closed trade: the target is what should have been done (seed 000),
        on every valid head, weighted ``trade_outcome_weight * scale`` (×10 by default)."""
        if not math.isfinite(reward) or not math.isfinite(scale):
            self._skip("non-finite reward")
            return None
        self.last_reward = reward
        target = trade_outcome_target(action, reward, neutral_band)
        if target is None:
            self._wait("no target: a HOLD outcome")
            return None
        valid = np.asarray(inputs.bars_valid, bool)
        targets = np.where(valid, target, -1)
        return self._learn(np.asarray(inputs.bars), valid, targets, self.config.trade_outcome_weight * abs(scale))

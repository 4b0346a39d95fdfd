"""Uniform wrappers the engine calls: :class:`CNNAgent`, :class:`DQNAgent`, :class:`COBAgent`.

Each agent keeps two copies of its network: a *learner* that the training worker updates
(always in train mode) and an *actor* that the inference thread reads (always in eval
mode, no autograd). After every successful update the learner's tensors are copied into
the actor under a short lock, so a prediction never waits for a training step and never
sees a half-updated or train-mode network (BENCH B6).

Bad numbers never get in: non-finite inputs refuse the prediction
(:class:`~models.common.inputs.NonFiniteInputError`); non-finite inputs, losses or gradients,
and exploding gradients, skip the update with weights, BatchNorm statistics and optimizer
state untouched, and are counted in ``status()["skipped_updates"]``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from models.cnn.multitimeframe_cnn import CNNConfig, MultiTimeframeCNN, cnn_loss
from models.cnn.perfect_moves import CNNSamples, trade_outcome_target
from models.cob.cob_net import COBConfig, COBNet, a2c_loss
from models.common import checkpoint as ckpt
from models.common.adamw import AdamW
from models.common.device import device_description
from models.common.inputs import (
    InputNotReadyError,
    ModelInputs,
    NonFiniteInputError,
    Prediction,
    PredictionRefused,
    TimeframePrediction,
)
from models.dqn.dueling_dqn import DQNConfig, DuelingQNet, dqn_td_loss, epsilon_at
from models.dqn.prioritized_replay import PrioritizedReplay


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters; works on the meta device (nothing allocated)."""
    return sum(p.numel() for p in module.parameters())


class _AgentRNG:
    """A private torch RNG stream per agent, so dropout draws do not depend on what
    else (another agent, another thread) consumed the global generator."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self._cuda = (device.index or 0) if device.type == "cuda" else None
        with torch.random.fork_rng(devices=[] if self._cuda is None else [self._cuda]):
            torch.manual_seed(seed)
            self._cpu = torch.get_rng_state()
            self._gpu = torch.cuda.get_rng_state(self._cuda) if self._cuda is not None else None

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cpu": self._cpu.clone()}
        if self._gpu is not None:
            out["cuda"] = self._gpu.clone()
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("cpu"), torch.Tensor):
            self._cpu = state["cpu"].clone()
        if self._cuda is not None and isinstance(state.get("cuda"), torch.Tensor):
            self._gpu = state["cuda"].clone()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=[] if self._cuda is None else [self._cuda]):
            torch.set_rng_state(self._cpu)
            if self._cuda is not None and self._gpu is not None:
                torch.cuda.set_rng_state(self._gpu, self._cuda)
            try:
                yield
            finally:
                self._cpu = torch.get_rng_state()
                if self._cuda is not None:
                    self._gpu = torch.cuda.get_rng_state(self._cuda)


def _finite(a: np.ndarray) -> bool:
    return bool(np.isfinite(a).all())


class Agent:
    """Common machinery: actor/learner copies, guarded updates, status, checkpoints."""

    kind: ClassVar[str] = ""
    config: Any

    def __init__(self, name: str, preset: str, config: Any, device: str | torch.device, seed: int) -> None:
        self.name = name
        self.preset = preset
        self.config = config
        self.device = torch.device(device)
        self.seed = seed
        self.enabled = True  # toggled by the engine/UI; predict() does not check it
        self._rng = _AgentRNG(seed, self.device)
        self.np_rng = np.random.default_rng(seed)
        with self._rng.active(), self.device:
            self.learner = self._build().train()
        self.actor = copy.deepcopy(self.learner).eval().requires_grad_(False)
        # Our own AdamW: any torch.optim optimizer imports torch._dynamo (~3 s), see models.common.adamw.
        self.optimizer = AdamW(self.learner.parameters(), lr=config.lr,
                               weight_decay=getattr(config, "weight_decay", 0.0))
        self.parameters = count_parameters(self.learner)
        self._publish_lock = threading.Lock()
        self._train_lock = threading.RLock()
        self.predictions = 0
        self.refused_predictions = 0
        self.training_steps = 0
        self.skip_reasons: Counter[str] = Counter()
        self.last_latency_ms: float | None = None
        self._latencies: deque[float] = deque(maxlen=256)
        self._losses: deque[float] = deque(maxlen=5)
        self.last_loss: float | None = None
        self.last_reward: float | None = None

    # -------------------------------------------------------------- to override
    def predict(self, inputs: ModelInputs) -> Prediction:
        """Batch-1 inference under ``torch.inference_mode`` on the actor copy."""
        raise NotImplementedError

    def train_on_reward(self, inputs: ModelInputs, action: int, reward: float, **kwargs: Any) -> float | None:
        """Learn from the reward of a closed position; the loss, or None if skipped."""
        raise NotImplementedError

    def _build(self) -> nn.Module:
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        return None

    def _counters(self) -> dict[str, int | float]:
        return {
            "training_steps": self.training_steps,
            "predictions": self.predictions,
            "skipped_updates": self.skipped_updates,
        }

    def _load_counters(self, counters: dict[str, Any]) -> None:
        self.training_steps = int(counters.get("training_steps", 0))
        self.predictions = int(counters.get("predictions", 0))

    # -------------------------------------------------------------- inference helpers
    def _infer(self, *args: torch.Tensor) -> Any:
        with self._publish_lock, torch.inference_mode():
            return self.actor(*args)

    def _record_prediction(self, t0: float) -> float:
        ms = (time.perf_counter() - t0) * 1e3
        self.predictions += 1
        self.last_latency_ms = ms
        self._latencies.append(ms)
        return ms

    def _refuse(self, exc: PredictionRefused) -> PredictionRefused:
        self.refused_predictions += 1
        return exc

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not a.flags.writeable:  # the engine shares read-only bar windows; torch wants its own memory
            a = a.copy()
        t = torch.from_numpy(a)
        return t.to(self.device, non_blocking=True) if self.device.type != "cpu" else t

    # -------------------------------------------------------------- training
    @property
    def skipped_updates(self) -> int:
        return sum(self.skip_reasons.values())

    def _skip(self, reason: str) -> None:
        self.skip_reasons[reason] += 1

    def _guarded_update(
        self,
        compute: Callable[[], tuple[torch.Tensor, Any]],
        after_step: Callable[[dict[str, torch.Tensor]], None] | None = None,
    ) -> tuple[float | None, Any]:
        """Run one optimizer step, or skip it (counted) with the model left exactly as it was.

        BatchNorm running statistics change during a train-mode forward, so they are
        snapshot first and restored on a skip; the optimizer only steps on success.
        """
        buffers = {k: v.detach().clone() for k, v in self.learner.named_buffers()}

        def restore() -> None:
            with torch.no_grad():
                for k, v in self.learner.named_buffers():
                    v.copy_(buffers[k])
            self.optimizer.zero_grad(set_to_none=True)

        self.optimizer.zero_grad(set_to_none=True)
        self.learner.train()  # explicit: the learner is only ever updated in train mode
        with self._rng.active():
            loss, aux = compute()
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            restore()
            self._skip("non-finite loss")
            return None, aux
        loss.backward()
        params = [p for p in self.learner.parameters() if p.grad is not None]
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        if not math.isfinite(norm):
            restore()
            self._skip("non-finite gradient")
            return None, aux
        if norm > self.config.skip_grad_norm:
            restore()
            self._skip("exploding gradient")
            return None, aux
        self.optimizer.step()
        if after_step is not None:
            after_step(buffers)
        self.training_steps += 1
        self.last_loss = loss_value
        self._losses.append(loss_value)
        self._publish()
        return loss_value, aux

    def _publish(self) -> None:
        """Copy the learner's parameters and buffers into the actor (brief lock)."""
        src = list(self.learner.parameters()) + list(self.learner.buffers())
        dst = list(self.actor.parameters()) + list(self.actor.buffers())
        with self._publish_lock, torch.no_grad():
            for d, s in zip(dst, src, strict=True):
                d.copy_(s)

    # -------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """Live numbers for the models pane; plain values only."""
        lat = sorted(self._latencies)
        return {
            "name": self.name,
            "kind": self.kind,
            "preset": self.preset,
            "enabled": self.enabled,
            "params": self.parameters,
            "device": device_description(self.device),
            "predictions": self.predictions,
            "refused_predictions": self.refused_predictions,
            "last_latency_ms": self.last_latency_ms,
            "latency_p50_ms": lat[len(lat) // 2] if lat else None,
            "last_loss": self.last_loss,
            "loss_ma5": sum(self._losses) / len(self._losses) if self._losses else None,
            "training_steps": self.training_steps,
            "epsilon": None,
            "skipped_updates": self.skipped_updates,
            "skip_reasons": dict(self.skip_reasons),
            "last_reward": self.last_reward,
        }

    # -------------------------------------------------------------- checkpoints
    def save(self, path: str | Path, metrics: dict[str, float] | None = None) -> Path:
        """Atomic, self-describing checkpoint; raises if any weight is non-finite."""
        with self._train_lock:
            payload = ckpt.build_payload(
                kind=self.kind,
                preset=self.preset,
                config=asdict(self.config),
                state_dict=self.learner.state_dict(),
                extra={
                    "optimizer": self.optimizer.state_dict(),
                    "rng": self._rng.state(),
                    "np_rng": self.np_rng.bit_generator.state,
                    **self._extra_state(),
                },
                counters=self._counters(),
                metrics=metrics,
                parameters=self.parameters,
                device=device_description(self.device),
            )
            return ckpt.save_checkpoint(path, payload)

    def load(self, path: str | Path, *, fallback: bool = True) -> dict[str, Any]:
        """Load ``path``; if it is refused and ``fallback``, try ``<name>.prev.pt``.

        Returns ``{"path", "fallback", "refused": [reasons]}``; raises
        :class:`~models.common.checkpoint.CheckpointError` when nothing could be loaded, in which
        case the model is unchanged.
        """
        refused: list[str] = []
        candidates = [Path(path)] + ([ckpt.previous_path(path)] if fallback else [])
        for i, p in enumerate(candidates):
            if i > 0 and not p.exists():
                break
            try:
                with self._train_lock:
                    self._apply(p)
            except ckpt.CheckpointError as exc:
                refused.append(str(exc))
                continue
            return {"path": str(p), "fallback": i > 0, "refused": refused}
        raise ckpt.CheckpointError(path, "no loadable checkpoint: " + " | ".join(refused))

    def _apply(self, path: Path) -> None:
        arch = type(self.config).ARCH_FIELDS
        data = ckpt.load_checkpoint(
            path, kind=self.kind, preset=self.preset, config=asdict(self.config), arch_fields=arch
        )
        state = data["state_dict"]
        own = self.learner.state_dict()
        # Check every key and shape *before* copying anything, so a mismatch cannot
        # leave the model half-loaded (load_state_dict copies as it goes).
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ckpt.CheckpointError(
                path, f"state dict keys differ (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        for k, v in own.items():
            if tuple(state[k].shape) != tuple(v.shape):
                raise ckpt.CheckpointError(
                    path, f"shape of {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                )
        extra = data.get("extra") or {}
        self.learner.load_state_dict(state)
        if "optimizer" in extra:
            # Optimizer moments are a convenience; the weights are what matter.
            with contextlib.suppress(ValueError, KeyError, TypeError, RuntimeError):
                self.optimizer.load_state_dict(extra["optimizer"])
            self.optimizer.param_groups[0]["lr"] = self.config.lr  # current settings win over stored ones
        # RNG streams too, so a resumed run draws what an uninterrupted one would have.
        self._rng.load_state(extra.get("rng") or {})
        with contextlib.suppress(TypeError, ValueError, KeyError):
            if extra.get("np_rng"):
                self.np_rng.bit_generator.state = extra["np_rng"]
        self._load_extra_state(extra)
        self._load_counters(data.get("counters") or {})
        self._publish()


# =============================================================================== CNN
class CNNAgent(Agent):
    """Multi-timeframe CNN: per-timeframe BUY/HOLD/SELL heads with confidences."""

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

    def _build(self) -> nn.Module:
        return MultiTimeframeCNN(self.config)

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
            return None
        valid = np.asarray(inputs.bars_valid, bool)
        targets = np.where(valid, target, -1)[None]
        weight = np.array([self.config.trade_outcome_weight * abs(scale)], np.float32)
        return self.train_supervised(np.asarray(inputs.bars)[None], valid[None], targets, weight)


# =============================================================================== DQN
class DQNAgent(Agent):
    """Dueling double DQN with prioritised replay; rewards arrive when positions close."""

    kind = "dqn"
    config: DQNConfig

    def __init__(
        self,
        preset: str = "small",
        device: str | torch.device = "cpu",
        seed: int = 0,
        config: DQNConfig | None = None,
        name: str = "DQN",
    ) -> None:
        super().__init__(name, preset, config or DQNConfig.preset(preset), device, seed)
        cfg = self.config
        self.target = copy.deepcopy(self.learner).eval().requires_grad_(False)
        self.replay = PrioritizedReplay(cfg.buffer_capacity, cfg.state_dim, alpha=cfg.per_alpha, seed=seed)
        self.decisions = 0  # drives the epsilon schedule
        self.target_syncs = 0
        self.dropped_pending = 0
        self._pending: OrderedDict[int, tuple[np.ndarray, int]] = OrderedDict()
        self._next_handle = 0

    def _build(self) -> nn.Module:
        return DuelingQNet(self.config)

    @property
    def epsilon(self) -> float:
        return epsilon_at(self.decisions, self.config)

    def predict(self, inputs: ModelInputs, explore: bool = True) -> Prediction:
        """Q-values of ``inputs.dqn_state``; epsilon-greedy when ``explore``."""
        return self.act(inputs.dqn_state, explore=explore)

    def act(self, state: np.ndarray, explore: bool = True) -> Prediction:
        """As :meth:`predict`, from a raw ``[DQN_INPUT]`` state vector.

        probs = softmax(Q); confidence = probability of the chosen action; value = max Q.
        """
        t0 = time.perf_counter()
        state = np.asarray(state)
        if state.shape != (self.config.state_dim,):
            raise ValueError(f"DQN state has shape {state.shape}, expected ({self.config.state_dim},)")
        if not _finite(state):
            raise self._refuse(NonFiniteInputError(f"{self.name}: non-finite state"))
        q = self._infer(self._tensor(state)[None])[0]
        q = q.float().cpu().numpy().astype(np.float64)
        if not _finite(q):
            raise self._refuse(PredictionRefused(f"{self.name}: non-finite Q-values"))
        probs = np.exp(q - q.max())
        probs /= probs.sum()
        action, explored = int(q.argmax()), False
        if explore:
            if self.np_rng.random() < self.epsilon:
                action, explored = int(self.np_rng.integers(self.config.n_actions)), True
            self.decisions += 1
        ms = self._record_prediction(t0)
        return Prediction(
            action,
            float(probs[action]),
            (float(probs[0]), float(probs[1]), float(probs[2])),
            value=float(q.max()),
            explored=explored,
            latency_ms=ms,
        )

    def begin_experience(self, state: np.ndarray, action: int) -> int:
        """Record (state, action) at decision time; the reward comes later via a handle."""
        state = np.array(state, dtype=np.float32)  # a copy: the engine may reuse its array
        if state.shape != (self.config.state_dim,):
            raise ValueError(f"DQN state has shape {state.shape}, expected ({self.config.state_dim},)")
        if not 0 <= action < self.config.n_actions:
            raise ValueError(f"action {action} out of range 0..{self.config.n_actions - 1}")
        if len(self._pending) >= self.config.max_pending:
            self._pending.popitem(last=False)  # bounded: the oldest never-closed decision goes
            self.dropped_pending += 1
        handle, self._next_handle = self._next_handle, self._next_handle + 1
        self._pending[handle] = (state, int(action))
        return handle

    @property
    def pending_experiences(self) -> int:
        return len(self._pending)

    def complete_experience(
        self, handle: int, reward: float, next_state: np.ndarray, done: bool = True, regime: str | None = None
    ) -> bool:
        """Attach the reward (from the position's close) and store in replay.

        ``regime`` multiplies the reward by ``config.regime_multipliers[regime]``.
        Returns False (counted as a skip) for non-finite numbers: they never enter replay.
        """
        if handle not in self._pending:
            raise KeyError(f"unknown or already completed experience handle {handle}")
        state, action = self._pending.pop(handle)
        next_state = np.asarray(next_state, np.float32)
        if regime is not None:
            if regime not in self.config.regime_multipliers:
                raise ValueError(f"unknown market regime {regime!r}; known: {sorted(self.config.regime_multipliers)}")
            reward *= self.config.regime_multipliers[regime]
        if not (math.isfinite(reward) and _finite(state) and _finite(next_state)):
            self._skip("non-finite input")
            return False
        self.last_reward = reward
        self.replay.add(state, action, reward, next_state, done)
        return True

    def train_step(self) -> float | None:
        """One prioritised double-DQN update (None until ``min_replay`` experiences)."""
        cfg = self.config
        with self._train_lock:
            if len(self.replay) < max(1, cfg.min_replay):
                return None
            beta = min(1.0, cfg.per_beta_start + (1 - cfg.per_beta_start) * self.training_steps / cfg.per_beta_steps)
            b = self.replay.sample(cfg.batch_size, beta)
            dev = self.device
            s, s2 = self._tensor(b.states), self._tensor(b.next_states)
            a = torch.from_numpy(b.actions).to(dev)
            r, d, w = self._tensor(b.rewards), self._tensor(b.dones), self._tensor(b.weights)

            def compute() -> tuple[torch.Tensor, torch.Tensor]:
                return dqn_td_loss(self.learner, self.target, s, a, r, s2, d, w, cfg.gamma, cfg.huber_delta)

            loss, td = self._guarded_update(compute)
            if loss is None:
                return None
            self.replay.update_priorities(b.indices, td.float().cpu().numpy())
            if self.training_steps % cfg.target_sync_every == 0:
                self.sync_target()
            return loss

    def sync_target(self) -> None:
        """Hard-copy the online network into the target network."""
        self.target.load_state_dict(self.learner.state_dict())
        self.target_syncs += 1

    def train_on_reward(
        self,
        inputs: ModelInputs | None,
        action: int,
        reward: float,
        *,
        handle: int | None = None,
        next_inputs: ModelInputs | None = None,
        scale: float = 1.0,
        regime: str | None = None,
        **_: Any,
    ) -> float | None:
        """Complete an experience (``handle`` from :meth:`begin_experience`, or a new one
        from ``inputs``) with ``reward * scale`` at the position's close, then train."""
        if handle is None:
            if inputs is None:
                raise ValueError("train_on_reward needs either a handle or the inputs at open")
            handle = self.begin_experience(inputs.dqn_state, action)
        ref = next_inputs if next_inputs is not None else inputs
        next_state = ref.dqn_state if ref is not None else self._pending[handle][0]
        if not self.complete_experience(handle, reward * scale, next_state, True, regime):
            return None
        losses = [x for x in (self.train_step() for _ in range(self.config.updates_per_experience)) if x is not None]
        return sum(losses) / len(losses) if losses else None

    def status(self) -> dict[str, Any]:
        s = super().status()
        s.update(
            epsilon=self.epsilon,
            replay_size=len(self.replay),
            pending=len(self._pending),
            target_syncs=self.target_syncs,
            decisions=self.decisions,
        )
        return s

    def _extra_state(self) -> dict[str, Any]:
        return {"target": self.target.state_dict()}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        if "target" in extra:
            self.target.load_state_dict(extra["target"])
        else:
            self.sync_target()

    def _counters(self) -> dict[str, int | float]:
        return {
            **super()._counters(),
            "decisions": self.decisions,
            "epsilon": self.epsilon,
            "target_syncs": self.target_syncs,
        }

    def _load_counters(self, counters: dict[str, Any]) -> None:
        super()._load_counters(counters)
        self.decisions = int(counters.get("decisions", 0))
        self.target_syncs = int(counters.get("target_syncs", 0))


# =============================================================================== COB
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


AGENTS: dict[str, Callable[..., Agent]] = {"cnn": CNNAgent, "dqn": DQNAgent, "cob": COBAgent}


def build_network(kind: str, preset: str = "small", device: str | torch.device = "meta") -> nn.Module:
    """A bare network for a preset (default on the meta device: shapes only, no memory)."""
    configs: dict[str, tuple[Any, Callable[[Any], nn.Module]]] = {
        "cnn": (CNNConfig, MultiTimeframeCNN),
        "dqn": (DQNConfig, DuelingQNet),
        "cob": (COBConfig, COBNet),
    }
    if kind not in configs:
        raise ValueError(f"unknown model kind {kind!r}: expected one of {sorted(configs)}")
    cfg_cls, net_cls = configs[kind]
    with torch.device(device):
        return net_cls(cfg_cls.preset(preset))

"""The DQN's agent: epsilon-greedy action, experiences begun at decision time and
completed with the reward when the position closes, prioritised double-DQN updates."""

from __future__ import annotations

import copy
import math
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from models.common.base_agent import Agent, CheckpointShape, Experience, _finite, np_rng_problem, state_dict_problem
from models.common.inputs import ModelInputs, NonFiniteInputError, Prediction, PredictionRefused
from models.dqn.dueling_dqn import DQNConfig, DuelingQNet, dqn_td_loss, epsilon_at
from models.dqn.prioritized_replay import PrioritizedReplay


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
        self.decisions = 0  # predictions made with exploration on
        self.market_s = 0.0  # market seconds into the session: drives the epsilon schedule
        self.target_syncs = 0
        self.dropped_pending = 0
        self._pending: OrderedDict[int, tuple[np.ndarray, int]] = OrderedDict()
        self._next_handle = 0

    INT_COUNTERS = (*Agent.INT_COUNTERS, "decisions", "target_syncs")

    @classmethod
    def network(cls, config: DQNConfig) -> nn.Module:
        return DuelingQNet(config)

    @classmethod
    def _extra_problem(cls, extra: dict[str, Any], config: DQNConfig, shape: CheckpointShape) -> str | None:
        if "target" in extra:
            problem = state_dict_problem(extra["target"], shape.state, "extra.target")
            if problem:
                return problem
        if "replay" in extra:
            problem = PrioritizedReplay.state_problem(extra["replay"], config.state_dim, config.n_actions,
                                                      "extra.replay")
            if problem:
                return problem
        if "replay_rng" in extra:
            return np_rng_problem(extra["replay_rng"], "extra.replay_rng")
        return None

    @property
    def epsilon(self) -> float:
        return epsilon_at(self.market_s, self.config)

    def on_market_time(self, seconds: float) -> None:
        self.market_s = max(0.0, float(seconds))

    def predict(self, inputs: ModelInputs, explore: bool | None = None) -> Prediction:
        """Q-values of ``inputs.dqn_state``; epsilon-greedy when ``explore`` (default: while exploring)."""
        return self.act(inputs.dqn_state, explore=self.exploring if explore is None else explore)

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
        z = (q - q.max()) / max(self.config.q_temperature, 1e-6)
        probs = np.exp(z)
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

    def begin_transition(self, state: np.ndarray, action: int) -> int:
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
    def pending_transitions(self) -> int:
        return len(self._pending)

    def begin_experience(self, inputs: ModelInputs, action: int, *, regime: str | None = None) -> Experience:
        """The state and action go into the pending transitions now; the close completes them."""
        return Experience(inputs, int(action), self.begin_transition(inputs.dqn_state, action), regime=regime)

    def train_on_outcome(self, experience: Experience, reward: float, *, scale: float = 1.0) -> float | None:
        """The position's reward, spread over every decision that held it: the opening
        decision and each later one become a chain of transitions whose rewards add up to
        the position's (the last one terminal), so each is valued by what followed it."""
        if not experience.steps:
            return self.train_on_reward(experience.inputs, experience.action, reward, handle=experience.handle,
                                        scale=scale, regime=experience.regime)
        if not (math.isfinite(reward) and math.isfinite(scale)):
            self._skip("non-finite reward")
            return None
        if experience.handle is not None:
            self._pending.pop(experience.handle, None)
        reward = reward * scale * self._regime_factor(experience.regime)
        chain = [(experience.inputs.dqn_state, experience.action)] + [(x.dqn_state, a) for x, a in experience.steps]
        share = reward / len(chain)
        states = [np.asarray(st, np.float32) for st, _ in chain]
        if not all(_finite(st) for st in states):
            self._skip("non-finite input")
            return None
        self.last_reward = reward
        for i, (st, a) in enumerate(zip(states, (a for _, a in chain), strict=True)):
            last = i == len(chain) - 1
            self.replay.add(st, a, share, st if last else states[i + 1], last)
        return self._train_after_adding()

    def train_on_counterfactual(self, inputs: ModelInputs, rewards: tuple[float, float, float], *,
                                scale: float = 1.0) -> float | None:
        """What BUY, HOLD and SELL from this state would have earned: three terminal transitions."""
        state = np.asarray(inputs.dqn_state, np.float32)
        r = np.asarray(rewards, np.float64) * scale
        if not (_finite(state) and _finite(r)):
            self._skip("non-finite input")
            return None
        for a in range(self.config.n_actions):
            self.replay.add(state, a, float(r[a]), state, True)
        return self._train_after_adding()

    def _train_after_adding(self) -> float | None:
        losses = [x for x in (self.train_step() for _ in range(self.config.updates_per_experience)) if x is not None]
        return sum(losses) / len(losses) if losses else None

    def _regime_factor(self, regime: str | None) -> float:
        if regime is None:
            return 1.0
        if regime not in self.config.regime_multipliers:
            raise ValueError(f"unknown market regime {regime!r}; known: {sorted(self.config.regime_multipliers)}")
        return float(self.config.regime_multipliers[regime])

    def complete_transition(
        self, handle: int, reward: float, next_state: np.ndarray, done: bool = True, regime: str | None = None
    ) -> bool:
        """Attach the reward (from the position's close) and store in replay.

        ``regime`` multiplies the reward by ``config.regime_multipliers[regime]``.
        Returns False (counted as a skip) for non-finite numbers: they never enter replay.
        """
        if handle not in self._pending:
            raise KeyError(f"unknown or already completed transition handle {handle}")
        state, action = self._pending.pop(handle)
        next_state = np.asarray(next_state, np.float32)
        reward *= self._regime_factor(regime)
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
                self._wait(f"replay warm-up: {len(self.replay)} of {max(1, cfg.min_replay)} experiences")
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
        """Complete a transition (``handle`` from :meth:`begin_transition`, or a new one
        from ``inputs``) with ``reward * scale`` at the position's close, then train."""
        if handle is None:
            if inputs is None:
                raise ValueError("train_on_reward needs either a handle or the inputs at open")
            handle = self.begin_transition(inputs.dqn_state, action)
        ref = next_inputs if next_inputs is not None else inputs
        next_state = ref.dqn_state if ref is not None else self._pending[handle][0]
        if not self.complete_transition(handle, reward * scale, next_state, True, regime):
            return None
        return self._train_after_adding()

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
        # The replay buffer goes with the weights, so a restart keeps what was learned from.
        return {"target": self.target.state_dict(),
                "replay": {k: torch.from_numpy(v) for k, v in self.replay.state().items()},
                "replay_rng": self.replay.rng.bit_generator.state}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        if "target" in extra:
            self.target.load_state_dict(extra["target"])
        else:
            self.sync_target()
        replay = extra.get("replay")
        if isinstance(replay, dict):
            self.replay.load_state({k: np.asarray(v) for k, v in replay.items()})
        if isinstance(extra.get("replay_rng"), dict):
            self.replay.rng.bit_generator.state = extra["replay_rng"]

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

"""Dueling double DQN over the DQN state vector (recent 1m bars + book + position).

The network and the pure learning pieces live here (epsilon schedule, double-DQN
targets, the TD loss). Orchestration (replay, pending experiences, target sync, skipping
bad updates, checkpoints) lives in :mod:`models.dqn.dqn_agent`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.common.input_norm import InputNorm
from models.common.schema import ACTIONS, DQN_INPUT


@dataclass
class DQNConfig:
    """Dueling double-DQN hyperparameters.

    Rewards arrive only when a position closes, so experiences are few: a small
    ``min_replay`` and a few updates per completed experience.
    """

    state_dim: int = DQN_INPUT
    n_actions: int = len(ACTIONS)
    hidden: tuple[int, ...] = (512, 512, 256)
    head_hidden: int = 128
    gamma: float = 0.99
    lr: float = 3e-4
    batch_size: int = 32
    buffer_capacity: int = 10_000
    #: Transitions before the first update: a handful, so a desk session's first outcomes teach.
    min_replay: int = 4
    updates_per_experience: int = 2
    target_sync_every: int = 100
    huber_delta: float = 1.0
    grad_clip: float = 10.0
    skip_grad_norm: float = 1e6
    per_alpha: float = 0.6
    per_beta_start: float = 0.4
    per_beta_steps: int = 100_000
    eps_start: float = 1.0
    eps_end: float = 0.05
    #: Market seconds over which epsilon decays within a session (exponential: 1/e after this long).
    eps_decay_s: float = 120.0
    eps_schedule: str = "exponential"  # "linear" (to eps_end at eps_decay_s) | "exponential"
    #: Q-values become action probabilities as softmax(Q / q_temperature) (confidence, fusion score).
    q_temperature: float = 0.1
    max_pending: int = 10_000
    regime_multipliers: dict[str, float] = field(
        default_factory=lambda: {"trending": 1.2, "ranging": 0.8, "volatile": 0.6}
    )

    ARCH_FIELDS = ("state_dim", "n_actions", "hidden", "head_hidden")

    @classmethod
    def preset(cls, name: str, **overrides: object) -> DQNConfig:
        """``small`` (CPU, ~0.5M params) or ``large`` (~5M params)."""
        presets: dict[str, dict[str, object]] = {
            "small": {},
            "large": {"hidden": (1536, 1536, 1024, 512), "head_hidden": 256, "batch_size": 64},
        }
        if name not in presets:
            raise ValueError(f"unknown DQN preset {name!r}: expected one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})  # type: ignore[arg-type]


class DuelingQNet(nn.Module):
    """``Q(s, a) = V(s) + A(s, a) - mean_a A(s, a)`` on a shared MLP trunk."""

    def __init__(self, config: DQNConfig) -> None:
        super().__init__()
        self.config = config
        self.norm_in = InputNorm(config.state_dim)
        layers: list[nn.Module] = []
        width = config.state_dim
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.value = nn.Sequential(
            nn.Linear(width, config.head_hidden), nn.ReLU(inplace=True), nn.Linear(config.head_hidden, 1)
        )
        self.advantage = nn.Sequential(
            nn.Linear(width, config.head_hidden), nn.ReLU(inplace=True), nn.Linear(config.head_hidden, config.n_actions)
        )

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        if state.dim() != 2 or state.shape[1] != self.config.state_dim:
            raise ValueError(
                f"DuelingQNet expects [batch, {self.config.state_dim}] (models.common.schema.DQN_INPUT), "
                f"got {tuple(state.shape)}; add a batch axis with x[None] for one state"
            )
        h = self.trunk(self.norm_in(state))
        adv = self.advantage(h)
        # Subtracting the mean advantage makes V and A identifiable (Wang et al. 2016).
        return self.value(h) + adv - adv.mean(dim=1, keepdim=True)


def epsilon_at(seconds: float, config: DQNConfig) -> float:
    """Exploration rate ``seconds`` of market time into a session, decaying to eps_end."""
    start, end, n = config.eps_start, config.eps_end, max(1e-9, config.eps_decay_s)
    if config.eps_schedule == "linear":
        return end + (start - end) * max(0.0, 1.0 - seconds / n)
    if config.eps_schedule == "exponential":
        return end + (start - end) * math.exp(-max(seconds, 0.0) / n)
    raise ValueError(f"unknown eps_schedule {config.eps_schedule!r}: expected 'linear' or 'exponential'")


def double_dqn_targets(
    online: nn.Module,
    target: nn.Module,
    rewards: torch.Tensor,
    next_states: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """``r + gamma * (1 - done) * Q_target(s', argmax_a Q_online(s', a))``, without gradients.

    The online net picks the action and the target net values it, which removes the
    max-operator overestimation of plain DQN (van Hasselt et al. 2016).
    """
    with torch.no_grad():
        next_actions = online(next_states).argmax(dim=1, keepdim=True)
        next_q = target(next_states).gather(1, next_actions).squeeze(1)
        return rewards + gamma * (1.0 - dones) * next_q


def dqn_td_loss(
    online: nn.Module,
    target: nn.Module,
    states: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    next_states: torch.Tensor,
    dones: torch.Tensor,
    is_weights: torch.Tensor,
    gamma: float,
    huber_delta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance-weighted Huber TD loss; returns ``(loss, td_errors)`` for PER priorities."""
    online.train()  # explicit: the learner is always updated in train mode
    q = online(states).gather(1, actions[:, None]).squeeze(1)
    y = double_dqn_targets(online, target, rewards, next_states, dones, gamma)
    per_sample = F.huber_loss(q, y, reduction="none", delta=huber_delta)
    return (is_weights * per_sample).mean(), (y - q).detach()

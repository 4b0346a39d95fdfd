"""COB model: a residual MLP over the consolidated order book, with policy and value heads.

The input is small (COB_INPUT floats: top levels each side plus book/flow scalars), so
depth and width, not sequence length, carry the capacity; the ``large`` preset is a
~400M-parameter residual MLP, which on a GPU is bound by reading its weights once per
inference (BENCH B13). Trained by a one-step advantage actor-critic update from the
reward of the position its signal contributed to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.common.schema import ACTIONS, COB_INPUT


@dataclass
class COBConfig:
    """Residual-MLP width/depth and actor-critic coefficients."""

    input_dim: int = COB_INPUT
    n_actions: int = len(ACTIONS)
    d_model: int = 256
    d_hidden: int = 512
    n_blocks: int = 3
    dropout: float = 0.0
    lr: float = 1e-4
    weight_decay: float = 0.0
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    huber_delta: float = 1.0
    grad_clip: float = 1.0
    skip_grad_norm: float = 1e6

    ARCH_FIELDS = ("input_dim", "n_actions", "d_model", "d_hidden", "n_blocks")

    @classmethod
    def preset(cls, name: str, **overrides: object) -> COBConfig:
        """``small`` (CPU, ~0.8M params) or ``large`` (GPU, ~403M params)."""
        presets: dict[str, dict[str, object]] = {
            "small": {},
            "large": {"d_model": 2048, "d_hidden": 8192, "n_blocks": 12, "lr": 3e-5},
        }
        if name not in presets:
            raise ValueError(f"unknown COB preset {name!r}: expected one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})  # type: ignore[arg-type]


class _Block(nn.Module):
    """Pre-norm residual feed-forward block (the transformer MLP, minus attention)."""

    def __init__(self, d: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.down(F.gelu(self.up(self.norm(x)))))


class COBNet(nn.Module):
    """Input ``[B, COB_INPUT]`` -> ``(action logits [B, 3], value [B])``."""

    def __init__(self, config: COBConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Linear(config.input_dim, config.d_model)
        self.blocks = nn.Sequential(
            *[_Block(config.d_model, config.d_hidden, config.dropout) for _ in range(config.n_blocks)]
        )
        self.norm = nn.LayerNorm(config.d_model)
        self.policy = nn.Linear(config.d_model, config.n_actions)
        self.value = nn.Linear(config.d_model, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 2 or x.shape[1] != self.config.input_dim:
            raise ValueError(
                f"COBNet expects [batch, {self.config.input_dim}] (models.common.schema.COB_INPUT), "
                f"got {tuple(x.shape)}; add a batch axis with x[None] for one book"
            )
        h = self.norm(self.blocks(self.embed(x)))
        return self.policy(h), self.value(h).squeeze(-1)


def a2c_loss(
    logits: torch.Tensor,
    value: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    config: COBConfig,
) -> torch.Tensor:
    """One-step actor-critic: ``-log pi(a) * (r - V)  +  c_v * huber(V, r)  -  c_e * H(pi)``.

    Each (book, action) is a one-step episode ending at the position's close, so the
    return is the reward itself and the critic is the baseline; the advantage is
    detached so the policy term does not train the value head.
    """
    log_probs = F.log_softmax(logits, dim=-1)
    advantage = (rewards - value).detach()
    policy = -(log_probs.gather(1, actions[:, None]).squeeze(1) * advantage).mean()
    value_loss = F.huber_loss(value, rewards, delta=config.huber_delta)
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    return policy + config.value_coef * value_loss - config.entropy_coef * entropy

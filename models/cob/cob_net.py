"""COB model: a residual MLP over the consolidated order book, with policy and value heads.

The input is small (COB_INPUT floats: top levels each side plus book/flow scalars), so
depth and width, not sequence length, carry the capacity; the ``large`` preset is a
~400M-parameter residual MLP, which on a GPU is bound by reading its weights once per
inference (BENCH B13). The inputs are standardised by running statistics kept in the
network (:class:`~models.common.input_norm.InputNorm`).

Trained as a contextual bandit by actor-critic (:func:`policy_loss`): from the outcomes
of positions (one action's reward known) and from counterfactuals (every action's reward
known), with normalised advantages, a value baseline and an entropy bonus so the policy
never collapses onto one action.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.common.input_norm import InputNorm
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
    #: Below this policy entropy (nats; ln 3 = 1.10 is uniform) a strong penalty pushes back,
    #: a last guard against collapsing onto one action.
    min_entropy: float = 0.3
    entropy_floor_coef: float = 2.0
    huber_delta: float = 1.0
    grad_clip: float = 1.0
    skip_grad_norm: float = 1e6
    batch_size: int = 32  # samples per update, drawn from the outcome buffer
    updates_per_outcome: int = 2  # minibatch updates after each new outcome
    buffer_capacity: int = 4096

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
        self.norm_in = InputNorm(config.input_dim)
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
        h = self.norm(self.blocks(self.embed(self.norm_in(x))))
        return self.policy(h), self.value(h).squeeze(-1)


def policy_loss(
    logits: torch.Tensor,
    value: torch.Tensor,
    rewards: torch.Tensor,
    known: torch.Tensor,
    weights: torch.Tensor,
    config: COBConfig,
) -> torch.Tensor:
    """Actor-critic loss for a batch of one-step (bandit) samples.

    ``rewards`` [B, 3] and ``known`` [B, 3]: which actions' rewards are known (one for a
    closed position, all three for a counterfactual). Each sample gets the exact policy
    gradient of its expected reward, an unknown action's reward taken as the critic's value
    V(s) (the value baseline): advantage ``r_a - sum(pi * r)``, normalised by its root mean
    square. The critic learns the policy's expected reward where that is known exactly;
    ``entropy_coef`` and the ``min_entropy`` floor keep the policy from collapsing.
    """
    log_probs = F.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    known_b = known.to(torch.bool)
    full = known_b.all(-1)
    # An action whose reward is not known is taken to earn the critic's value: the policy
    # then follows the exact gradient of its expected reward, which fades as a losing
    # action becomes unlikely instead of piling its mass onto one of the others.
    filled = torch.where(known_b, rewards, value.detach()[:, None])
    expected = (probs.detach() * filled).sum(-1, keepdim=True)
    adv = filled - expected
    rms = adv.pow(2).mean().sqrt().clamp(min=1e-3)  # normalised advantages (not re-centred)
    w = weights / weights.sum().clamp(min=1e-8)
    policy = -(((probs.detach() * adv / rms) * log_probs).sum(-1) * w).sum()
    # The critic learns the policy's expected reward where that is known exactly (every
    # action's reward: a counterfactual); it stands in for the unknown ones elsewhere.
    fw = w * full.to(w.dtype)
    value_loss = (F.huber_loss(value, expected[:, 0], delta=config.huber_delta, reduction="none") * fw).sum()
    per_entropy = -(probs * log_probs).sum(-1)
    entropy = (per_entropy * w).sum()
    floor = (F.relu(config.min_entropy - per_entropy) * w).sum()
    return policy + config.value_coef * value_loss - config.entropy_coef * entropy + config.entropy_floor_coef * floor

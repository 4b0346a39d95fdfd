"""Multi-timeframe CNN: one Conv1d extractor and one BUY/HOLD/SELL head per timeframe.

Every timeframe has its own weights, but all timeframes run in the *same* kernels: the
timeframes are stacked on the channel axis and every layer is a grouped convolution with
``groups = n_timeframes``. That keeps the timeframes fully independent (no channel of one
group reads another) while the forward pass dispatches as few ops as a single-timeframe
CNN, which is what bounds batch-1 latency on a CPU (BENCH B7).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.common.schema import CNN_TIMEFRAMES, N_BAR_FEATURES, WINDOW

#: Seed per-timeframe weights for combining heads (renormalised over valid heads).
SEED_TIMEFRAME_WEIGHTS: dict[str, float] = {
    "1s": 0.05,
    "1m": 0.05,
    "5m": 0.10,
    "15m": 0.15,
    "1h": 0.25,
    "4h": 0.25,
    "1d": 0.20,
}


@dataclass
class CNNConfig:
    """Architecture and training hyperparameters of the multi-timeframe CNN.

    channels:  conv channels *per timeframe*, one entry per Conv1d layer.
    head_hidden: hidden width of each timeframe's head.
    confidence_loss_weight: the 0.5 in ``CE + 0.5 * confidence BCE`` (spec §5).
    trade_outcome_weight: per-sample weight of closed-trade samples (seed 000: ×10).
    skip_grad_norm: a gradient norm above this is treated as an explosion and skipped.
    """

    timeframes: tuple[str, ...] = CNN_TIMEFRAMES
    n_features: int = N_BAR_FEATURES
    window: int = WINDOW
    channels: tuple[int, ...] = (64, 128, 128)
    #: Conv strides, one per layer: halving the time axis early cuts the batch-1 compute
    #: (the small CNN is compute-bound on a CPU) at no cost in parameters.
    strides: tuple[int, ...] = (2, 2, 1)
    kernel_size: int = 5
    head_hidden: int = 96
    dropout: float = 0.1
    lr: float = 3e-4
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    skip_grad_norm: float = 1e6
    confidence_loss_weight: float = 0.5
    trade_outcome_weight: float = 10.0
    counterfactual_weight: float = 1.0  # per-sample weight of a counterfactual (what each action would have made)
    batch_size: int = 16  # samples per online update, drawn from the outcome buffer
    updates_per_outcome: int = 1
    buffer_capacity: int = 1024  # online samples kept (bars stored as float16)
    timeframe_weights: dict[str, float] = field(default_factory=lambda: dict(SEED_TIMEFRAME_WEIGHTS))

    #: Fields that shape the state dict; a checkpoint that differs in these is refused.
    ARCH_FIELDS = ("timeframes", "n_features", "window", "channels", "strides", "kernel_size", "head_hidden")

    @classmethod
    def preset(cls, name: str, **overrides: object) -> CNNConfig:
        """``small`` (CPU, ~0.87M params) or ``large`` (GPU, ~50M params)."""
        presets: dict[str, dict[str, object]] = {
            "small": {},
            "large": {
                # Sized for ~50M parameters over the seven heads (the seed's CNN scale).
                "channels": (128, 256, 512, 512, 704, 704),
                "strides": (1, 2, 1, 2, 1, 1),
                "kernel_size": 5,
                "head_hidden": 1024,
                "dropout": 0.2,
                "lr": 1e-4,
            },
        }
        if name not in presets:
            raise ValueError(f"unknown CNN preset {name!r}: expected one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})  # type: ignore[arg-type]


class MultiTimeframeCNN(nn.Module):
    """Input ``[B, n_tf, WINDOW, F]`` (or a dict tf -> ``[B, WINDOW, F]``).

    Returns ``(logits [B, n_tf, 3], confidence_logit [B, n_tf])``; the confidence in
    [0, 1] is ``sigmoid(confidence_logit)`` (kept as a logit so the loss is stable).
    """

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        n_tf = len(config.timeframes)
        self.extractor = _make_extractor(config)
        # The extractor ends in a global average pool, so each timeframe flattens to its last
        # layer's channels. (A dummy forward on the meta device would say the same, but its
        # first use imports torch's meta kernels: seconds of start-up, BENCH B12.)
        flat = config.channels[-1]
        # Per-timeframe heads as grouped 1x1 convolutions: again one kernel for all heads.
        self.head = nn.Sequential(
            nn.Conv1d(n_tf * flat, n_tf * config.head_hidden, 1, groups=n_tf),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Conv1d(n_tf * config.head_hidden, n_tf * 4, 1, groups=n_tf),  # 3 logits + conf
        )

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        n_tf = len(cfg.timeframes)
        if isinstance(x, Mapping):
            x = self._stack(x)
        if x.dim() != 4 or tuple(x.shape[1:]) != (n_tf, cfg.window, cfg.n_features):
            raise ValueError(
                f"MultiTimeframeCNN expects [batch, {n_tf}, {cfg.window}, {cfg.n_features}] "
                f"(timeframes {cfg.timeframes}, window, features), got {tuple(x.shape)}; "
                "add a batch axis with x[None] for one sample"
            )
        b = x.shape[0]
        # [B, tf, W, F] -> [B, tf*F, W]: group g of the conv sees exactly timeframe g.
        h = x.permute(0, 1, 3, 2).reshape(b, n_tf * cfg.n_features, cfg.window)
        out = self.head(self.extractor(h)).reshape(b, n_tf, 4)
        return out[..., :3], out[..., 3]

    def _stack(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.config
        unknown = set(x) - set(cfg.timeframes)
        if unknown:
            raise ValueError(f"unknown timeframes {sorted(unknown)}; expected a subset of {cfg.timeframes}")
        ref = next(iter(x.values()))
        zeros = ref.new_zeros((ref.shape[0], cfg.window, cfg.n_features))
        return torch.stack([x.get(tf, zeros) for tf in cfg.timeframes], dim=1)


def _make_extractor(config: CNNConfig) -> nn.Sequential:
    """Grouped Conv1d stack (BatchNorm, ReLU, dropout) ending in a global average pool."""
    n_tf, k = len(config.timeframes), config.kernel_size
    layers: list[nn.Module] = []
    if len(config.strides) != len(config.channels):
        raise ValueError(
            f"CNNConfig: {len(config.channels)} channels but {len(config.strides)} strides; "
            "give one stride per conv layer"
        )
    c_in = config.n_features
    for c_out, stride in zip(config.channels, config.strides, strict=True):
        layers += [
            # No conv bias: the BatchNorm right after it has its own shift.
            nn.Conv1d(n_tf * c_in, n_tf * c_out, k, stride=stride, padding=k // 2, groups=n_tf, bias=False),
            nn.BatchNorm1d(n_tf * c_out),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
        ]
        c_in = c_out
    layers.append(nn.AdaptiveAvgPool1d(1))
    return nn.Sequential(*layers)


def cnn_loss(
    logits: torch.Tensor,
    confidence_logit: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    confidence_loss_weight: float = 0.5,
) -> torch.Tensor:
    """Per-sample-weighted ``CE(action) + w * BCE(confidence, predicted action was right)``.

    targets: ``[B, n_tf]`` action indices, ``-1`` where a head has no label (other
    timeframes of a perfect-move sample, or invalid timeframes). weights: ``[B]``.
    Averaged over labelled heads, not over weight mass, so a lone ×10 trade-outcome
    sample really takes a ×10 step.
    """
    mask = targets >= 0
    if not bool(mask.any()):
        raise ValueError("cnn_loss: no labelled head in the batch (all targets are -1)")
    w = weights[:, None].expand_as(targets)[mask]
    lg, tg = logits[mask], targets[mask]
    ce = F.cross_entropy(lg, tg, reduction="none")
    # Confidence target: was the head's own argmax right? Detached so the confidence
    # head learns calibration without pushing the action logits around.
    correct = (lg.detach().argmax(-1) == tg).to(lg.dtype)
    conf = F.binary_cross_entropy_with_logits(confidence_logit[mask], correct, reduction="none")
    return (w * (ce + confidence_loss_weight * conf)).mean()

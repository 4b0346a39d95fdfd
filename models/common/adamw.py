"""AdamW for the agents, without ``torch.optim``.

Making any ``torch.optim`` optimizer imports ``torch._dynamo`` (2.5-3 s of pure Python
on these machines, holding the GIL): at start-up that is a slower desk, and at the
first closed position it is a multi-second stall of ingest and the UI. The update here
is the one ``torch.optim.AdamW`` makes (decoupled weight decay, bias-corrected moments,
a step count per parameter, parameters without a gradient untouched); a test holds the
two to the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


class AdamW:
    """``torch.optim.AdamW(params, lr, betas, eps, weight_decay)``, single param group."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        self.params = [p for p in params if p.requires_grad]
        # A list of one group, as torch has: callers may set ``param_groups[0]["lr"]``.
        self.param_groups: list[dict[str, Any]] = [
            {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}]
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        lr, (b1, b2), eps, wd = g["lr"], g["betas"], g["eps"], g["weight_decay"]
        for p, st in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            grad = p.grad
            if not st:
                st["step"] = 0
                st["exp_avg"] = torch.zeros_like(p)
                st["exp_avg_sq"] = torch.zeros_like(p)
            st["step"] += 1
            t = st["step"]
            m, v = st["exp_avg"], st["exp_avg_sq"]
            p.mul_(1 - lr * wd)
            m.lerp_(grad, 1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**t))

    def state_dict(self) -> dict[str, Any]:
        """Plain data and tensors only (checkpoints load with ``weights_only=True``)."""
        return {
            "format": "tradedesk-adamw",
            "param_groups": [dict(self.param_groups[0], betas=list(self.param_groups[0]["betas"]))],
            "state": [dict(st) for st in self.state],
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Refuses (``ValueError``) anything that is not this optimizer's state for these parameters."""
        if not isinstance(sd, dict) or sd.get("format") != "tradedesk-adamw":
            raise ValueError("not a tradedesk AdamW state")
        state = sd.get("state")
        if not isinstance(state, list) or len(state) != len(self.params):
            raise ValueError("optimizer state is for other parameters")
        for p, st in zip(self.params, state, strict=True):
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st and (not isinstance(st[key], torch.Tensor) or st[key].shape != p.shape):
                    raise ValueError(f"optimizer state {key} does not fit its parameter")
        self.state = [{k: (v.to(p.device) if isinstance(v, torch.Tensor) else v) for k, v in st.items()}
                      for p, st in zip(self.params, state, strict=True)]
        group = dict(sd["param_groups"][0])
        group["betas"] = tuple(group["betas"])
        self.param_groups[0].update(group)

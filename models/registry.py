"""The three agents by key, and bare networks per preset (for sizes and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.cnn.cnn_agent import CNNAgent
from models.cnn.multitimeframe_cnn import CNNConfig, MultiTimeframeCNN
from models.cob.cob_agent import COBAgent
from models.cob.cob_net import COBConfig, COBNet
from models.common.base_agent import Agent
from models.common.checkpoint import CheckpointError
from models.dqn.dqn_agent import DQNAgent
from models.dqn.dueling_dqn import DQNConfig, DuelingQNet

AGENTS: dict[str, Callable[..., Agent]] = {"cnn": CNNAgent, "dqn": DQNAgent, "cob": COBAgent}
CONFIGS: dict[str, Any] = {"cnn": CNNConfig, "dqn": DQNConfig, "cob": COBConfig}


def make_agent(kind: str, preset: str, device: str | torch.device, seed: int, name: str,
               **overrides: object) -> Agent:
    """An agent of ``kind`` with its preset's config, fields in ``overrides`` replaced
    (e.g. the DQN's epsilon decay and regime multipliers from settings)."""
    if kind not in AGENTS:
        raise ValueError(f"unknown model kind {kind!r}: expected one of {sorted(AGENTS)}")
    config = CONFIGS[kind].preset(preset, **overrides)
    return AGENTS[kind](preset=preset, device=device, seed=seed, config=config, name=name)


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


def check_checkpoint(path: str | Path, kind: str, preset: str, *, data: dict[str, Any] | None = None,
                     **overrides: object) -> dict[str, Any]:
    """What loading ``path`` into a ``kind`` model of ``preset`` would say, without building
    the model (its shapes come from the meta device): the data, or
    :class:`~models.common.checkpoint.CheckpointError` naming the file and the field."""
    if kind not in AGENTS:
        raise CheckpointError(path, f"model kind mismatch: field kind = {kind!r}: expected one of {sorted(AGENTS)}")
    try:
        config = CONFIGS[kind].preset(preset, **overrides)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(path, f"size preset mismatch: field preset = {preset!r}: {exc}") from None
    cls = AGENTS[kind]
    if not isinstance(cls, type) or not issubclass(cls, Agent):  # pragma: no cover - registry error
        raise TypeError(cls)
    return cls.check_checkpoint(path, preset=preset, config=config, data=data)

"""The three agents by key, and bare networks per preset (for sizes and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from models.cnn.cnn_agent import CNNAgent
from models.cnn.multitimeframe_cnn import CNNConfig, MultiTimeframeCNN
from models.cob.cob_agent import COBAgent
from models.cob.cob_net import COBConfig, COBNet
from models.common.base_agent import Agent
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

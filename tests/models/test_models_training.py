"""Guarded updates (NaN/explosions skipped, weights unchanged), DQN targets and sync, PER."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from models.cnn import cnn_agent
from models.cnn.cnn_agent import CNNAgent
from models.cob.cob_agent import COBAgent
from models.common.base_agent import Agent
from models.common.inputs import ModelInputs
from models.common.schema import BUY, CNN_TIMEFRAMES, DQN_INPUT, SELL
from models.dqn.dqn_agent import DQNAgent
from models.dqn.dueling_dqn import DQNConfig, double_dqn_targets, epsilon_at
from models.dqn.prioritized_replay import PrioritizedReplay, SumTree
from tests.models.test_models_nets import random_inputs


def snapshot(agent: Agent) -> dict[str, torch.Tensor]:
    out = {f"learner.{k}": v.clone() for k, v in agent.learner.state_dict().items()}
    out.update({f"actor.{k}": v.clone() for k, v in agent.actor.state_dict().items()})
    return out


def assert_unchanged(agent: Agent, before: dict[str, torch.Tensor]) -> None:
    after = snapshot(agent)
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"{k} changed"


def cnn_batch(n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    inp = [random_inputs(seed + i) for i in range(n)]
    bars = np.stack([i.bars for i in inp])
    valid = np.ones((n, len(CNN_TIMEFRAMES)), bool)
    targets = np.random.default_rng(seed).integers(0, 3, size=(n, len(CNN_TIMEFRAMES)))
    return bars, valid, targets


def test_cnn_nan_features_skip_the_update() -> None:
    agent = CNNAgent()
    bars, valid, targets = cnn_batch()
    bars[1, 0, 3, 2] = np.nan
    before = snapshot(agent)
    assert agent.train_supervised(bars, valid, targets) is None
    assert_unchanged(agent, before)
    assert agent.status()["skipped_updates"] == 1
    assert agent.training_steps == 0


def test_nan_loss_skips_with_batchnorm_stats_and_weights_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = CNNAgent()
    bars, valid, targets = cnn_batch()
    before = snapshot(agent)

    def nan_loss(logits: torch.Tensor, *_: object, **__: object) -> torch.Tensor:
        return logits.sum() * float("nan")  # the forward ran: BatchNorm stats moved

    monkeypatch.setattr(cnn_agent, "cnn_loss", nan_loss)
    assert agent.train_supervised(bars, valid, targets) is None
    assert_unchanged(agent, before)
    assert agent.skip_reasons["non-finite loss"] == 1
    assert all(p.grad is None for p in agent.learner.parameters())


@pytest.mark.parametrize("agent_cls", [CNNAgent, DQNAgent, COBAgent])
def test_finite_loss_with_nan_gradient_is_skipped(agent_cls: type) -> None:
    agent = agent_cls()
    agent.config.min_replay = 1  # (DQN) train from the first experience
    inputs = random_inputs()
    param = next(agent.learner.parameters())
    handle = param.register_hook(lambda g: torch.full_like(g, float("nan")))
    before = snapshot(agent)
    try:
        assert agent.train_on_reward(inputs, BUY, 0.5) is None
    finally:
        handle.remove()
    assert_unchanged(agent, before)
    assert agent.skip_reasons["non-finite gradient"] >= 1
    assert agent.training_steps == 0
    assert agent.train_on_reward(inputs, BUY, 0.5) is not None  # healthy again afterwards
    assert agent.training_steps >= 1


def test_exploding_gradient_is_skipped() -> None:
    agent = COBAgent()
    agent.config.skip_grad_norm = 1e-12  # every real gradient now counts as an explosion
    before = snapshot(agent)
    assert agent.train_on_reward(random_inputs(), SELL, 1.0) is None
    assert_unchanged(agent, before)
    assert agent.skip_reasons["exploding gradient"] == agent.config.updates_per_outcome


def test_non_finite_reward_is_skipped_and_counted() -> None:
    for agent in (CNNAgent(), DQNAgent(), COBAgent()):
        before = snapshot(agent)
        assert agent.train_on_reward(random_inputs(), BUY, float("nan")) is None
        assert_unchanged(agent, before)
        assert agent.status()["skipped_updates"] == 1


def test_cnn_training_moves_toward_the_target_and_reports_loss() -> None:
    agent = CNNAgent(seed=2)
    inputs = random_inputs(9)
    first = agent.predict(inputs).per_tf
    losses = [agent.train_on_reward(inputs, BUY, 1.0) for _ in range(15)]
    assert all(loss is not None for loss in losses)
    assert losses[-1] < losses[0]
    last = agent.predict(inputs).per_tf
    assert first is not None
    assert last is not None
    assert last["1h"].probs[BUY] > first["1h"].probs[BUY]
    st = agent.status()
    assert st["training_steps"] == 15
    assert st["loss_ma5"] == pytest.approx(np.mean(losses[-5:]))


def test_cnn_absent_timeframes_keep_their_batchnorm_statistics() -> None:
    agent = CNNAgent()
    bars, valid, targets = cnn_batch()
    last = len(CNN_TIMEFRAMES) - 1
    valid[:, last] = False  # 1d warming up in every sample
    bn = agent.learner.extractor[1]
    c = bn.num_features // len(CNN_TIMEFRAMES)
    before = bn.running_mean.clone()
    assert agent.train_supervised(bars, valid, targets) is not None
    assert torch.equal(bn.running_mean[last * c :], before[last * c :])
    assert not torch.equal(bn.running_mean[:c], before[:c])


class FixedQ(nn.Module):
    def __init__(self, q: list[list[float]]) -> None:
        super().__init__()
        self.q = torch.tensor(q)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.q[: s.shape[0]]


def test_double_dqn_target_uses_online_argmax_and_target_values() -> None:
    online = FixedQ([[1.0, 5.0, 2.0], [9.0, 0.0, 0.0]])
    target = FixedQ([[10.0, 3.0, 7.0], [4.0, 8.0, 8.0]])
    y = double_dqn_targets(
        online, target, torch.tensor([1.0, 1.0]), torch.zeros(2, 4), torch.tensor([0.0, 1.0]), gamma=0.5
    )
    # online picks action 1 (Q 5) -> target values it at 3, not target's own max 10
    assert y.tolist() == pytest.approx([1.0 + 0.5 * 3.0, 1.0])
    assert not y.requires_grad


def test_dqn_target_network_syncs_every_n_updates() -> None:
    cfg = DQNConfig(min_replay=1, batch_size=4, updates_per_experience=1, target_sync_every=3, lr=1e-2)
    agent = DQNAgent(config=cfg, seed=0)
    inputs = random_inputs()

    def same() -> bool:
        return all(
            torch.equal(a, b) for a, b in zip(agent.learner.parameters(), agent.target.parameters(), strict=True)
        )

    assert same()
    for step in (1, 2):
        agent.train_on_reward(inputs, BUY, 1.0)
        assert agent.training_steps == step
        assert not same()
        assert agent.target_syncs == 0
    agent.train_on_reward(inputs, BUY, 1.0)
    assert agent.training_steps == 3
    assert same()
    assert agent.target_syncs == 1


def test_dqn_experience_is_rewarded_on_completion_only() -> None:
    agent = DQNAgent()
    state = random_inputs().dqn_state
    h = agent.begin_transition(state, BUY)
    state[:] = 123.0  # the engine reusing its buffer must not change the stored state
    assert len(agent.replay) == 0
    assert agent.pending_transitions == 1
    assert agent.complete_transition(h, 0.25, np.zeros(DQN_INPUT, np.float32), done=True, regime="trending")
    assert len(agent.replay) == 1
    assert agent.pending_transitions == 0
    assert agent.replay.rewards[0] == pytest.approx(0.25 * 1.2)
    assert agent.replay.states[0, 0] != 123.0
    with pytest.raises(KeyError):
        agent.complete_transition(h, 0.1, state)
    h2 = agent.begin_transition(random_inputs().dqn_state, SELL)
    assert not agent.complete_transition(h2, float("inf"), state)
    assert len(agent.replay) == 1
    assert agent.skipped_updates == 1


def test_dqn_learns_a_reward_through_replay() -> None:
    cfg = DQNConfig(min_replay=4, batch_size=16, lr=1e-3)
    agent = DQNAgent(config=cfg, seed=1)
    inputs = random_inputs(5)
    for _ in range(30):
        agent.train_on_reward(inputs, SELL, 1.0)
        agent.train_on_reward(inputs, BUY, -1.0)
    q = agent.predict(inputs, explore=False)
    assert q.action == SELL
    assert agent.status()["replay_size"] == 60


def test_epsilon_schedules() -> None:
    lin = DQNConfig(eps_start=1.0, eps_end=0.1, eps_decay_s=100, eps_schedule="linear")
    assert epsilon_at(0, lin) == 1.0
    assert epsilon_at(50, lin) == pytest.approx(0.55)
    assert epsilon_at(100, lin) == pytest.approx(0.1)
    assert epsilon_at(10_000, lin) == pytest.approx(0.1)
    exp = DQNConfig(eps_start=1.0, eps_end=0.1, eps_decay_s=100, eps_schedule="exponential")
    vals = [epsilon_at(s, exp) for s in (0, 10, 50, 100, 1000)]
    assert vals == sorted(vals, reverse=True)
    assert vals[-1] == pytest.approx(0.1, abs=1e-4)
    assert vals[3] == pytest.approx(0.1 + 0.9 * math.exp(-1))  # 1/e of the way left after eps_decay_s


def test_per_sampling_prefers_high_priority_and_weights_compensate() -> None:
    rb = PrioritizedReplay(8, 2, alpha=1.0, seed=0)
    for i in range(4):
        rb.add(np.full(2, i, np.float32), 0, 0.0, np.zeros(2, np.float32), True)
    rb.update_priorities(np.arange(4), np.array([100.0, 1.0, 1.0, 1.0]))
    counts = np.zeros(4)
    for _ in range(50):
        b = rb.sample(32)
        counts += np.bincount(b.indices, minlength=4)
        assert (b.states[:, 0] == b.indices).all()
    assert counts[0] / counts.sum() > 0.9  # 100 / 103 expected
    b = rb.sample(64, beta=1.0)
    assert b.weights[b.indices == 0].max() < b.weights[b.indices != 0].min()
    assert b.weights.max() == pytest.approx(1.0)


def test_replay_is_a_bounded_ring_and_seeded() -> None:
    a, b = PrioritizedReplay(5, 3, seed=4), PrioritizedReplay(5, 3, seed=4)
    for rb in (a, b):
        for i in range(12):
            rb.add(np.full(3, i, np.float32), i % 3, float(i), np.zeros(3, np.float32), False)
    assert len(a) == 5
    assert sorted(a.states[:, 0].tolist()) == [7, 8, 9, 10, 11]
    assert a.tree.total == pytest.approx(5.0)  # evicted items no longer hold mass
    assert np.array_equal(a.sample(16).indices, b.sample(16).indices)


def test_sum_tree_find() -> None:
    t = SumTree(5)
    t.update(np.arange(5), np.array([1.0, 0.0, 2.0, 3.0, 4.0]))
    assert t.total == 10.0
    assert t.find(np.array([0.0, 0.99, 1.0, 2.99, 3.0, 9.99])).tolist() == [0, 0, 2, 2, 3, 4]


def test_status_epsilon_and_inputs_example() -> None:
    """The engine-facing example from the models README/report, kept honest."""
    inputs = ModelInputs.zeros()
    dqn = DQNAgent()
    pred = dqn.predict(inputs)
    handle = dqn.begin_transition(inputs.dqn_state, pred.action)
    dqn.train_on_reward(inputs, pred.action, 0.01, handle=handle, next_inputs=inputs)
    assert 0.0 < dqn.status()["epsilon"] <= 1.0


def test_own_adamw_makes_torch_adamw_updates_and_round_trips() -> None:
    """models.common.adamw.AdamW against torch.optim.AdamW: same weights after every step, a
    parameter without a gradient left alone (and its step count with it)."""
    from models.common.adamw import AdamW

    def net() -> torch.nn.Module:
        torch.manual_seed(3)
        return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    ours_net, ref_net = net(), net()
    ours = AdamW(ours_net.parameters(), lr=1e-2, weight_decay=0.05)
    ref = torch.optim.AdamW(ref_net.parameters(), lr=1e-2, weight_decay=0.05, foreach=False)
    g = torch.Generator().manual_seed(4)
    for i in range(12):
        x = torch.randn(5, 6, generator=g)
        for model, opt in ((ours_net, ours), (ref_net, ref)):
            opt.zero_grad(set_to_none=True)
            model(x).pow(2).mean().backward()
            if i % 3 == 0:
                model[2].bias.grad = None  # no gradient this step: untouched, no step counted
            opt.step()
        for a, b in zip(ours_net.parameters(), ref_net.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert ours.state[3]["step"] == 8 and ours.state[0]["step"] == 12

    again = AdamW(ours_net.parameters(), lr=1e-2, weight_decay=0.05)
    again.load_state_dict(ours.state_dict())
    assert again.state[3]["step"] == 8
    with pytest.raises(ValueError):
        again.load_state_dict(ref.state_dict())  # torch's layout is not ours: refused, not misread
    with pytest.raises(ValueError):
        AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-3).load_state_dict(ours.state_dict())

"""Networks, presets, devices, inference API and determinism of the models package."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.cnn.cnn_agent import CNNAgent
from models.cnn.multitimeframe_cnn import CNNConfig, MultiTimeframeCNN
from models.cob.cob_agent import COBAgent
from models.common.base_agent import count_parameters
from models.common.device import device_description, select_device
from models.common.inputs import InputNotReadyError, ModelInputs, NonFiniteInputError
from models.common.schema import ACTIONS, CNN_TIMEFRAMES, COB_INPUT, DQN_INPUT, N_BAR_FEATURES, WINDOW
from models.dqn.dqn_agent import DQNAgent
from models.registry import AGENTS, build_network

TARGETS = {"cnn": 50e6, "dqn": 5e6, "cob": 400e6}


def random_inputs(seed: int = 0, valid: tuple[bool, ...] | None = None) -> ModelInputs:
    rng = np.random.default_rng(seed)
    n_tf = len(CNN_TIMEFRAMES)
    return ModelInputs(
        bars=rng.standard_normal((n_tf, WINDOW, N_BAR_FEATURES)).astype(np.float32),
        bars_valid=np.array(valid if valid is not None else [True] * n_tf),
        cob=rng.standard_normal(COB_INPUT).astype(np.float32),
        dqn_state=rng.standard_normal(DQN_INPUT).astype(np.float32),
    )


@pytest.mark.parametrize("kind", ["cnn", "dqn", "cob"])
def test_large_presets_on_meta_device_are_within_15_percent(kind: str) -> None:
    net = build_network(kind, "large", device="meta")
    assert all(p.is_meta for p in net.parameters())  # nothing allocated
    n = count_parameters(net)
    assert abs(n - TARGETS[kind]) / TARGETS[kind] <= 0.15, n


@pytest.mark.parametrize("kind", ["cnn", "dqn", "cob"])
def test_small_presets_are_cpu_sized(kind: str) -> None:
    n = count_parameters(build_network(kind, "small"))
    assert 300_000 <= n <= 1_000_000, n


def test_small_networks_forward_at_batch_1() -> None:
    cnn = build_network("cnn", "small", "cpu").eval()
    logits, conf = cnn(torch.zeros(1, len(CNN_TIMEFRAMES), WINDOW, N_BAR_FEATURES))
    assert logits.shape == (1, len(CNN_TIMEFRAMES), len(ACTIONS))
    assert conf.shape == (1, len(CNN_TIMEFRAMES))
    q = build_network("dqn", "small", "cpu")(torch.zeros(1, DQN_INPUT))
    assert q.shape == (1, len(ACTIONS))
    pol, value = build_network("cob", "small", "cpu")(torch.zeros(1, COB_INPUT))
    assert pol.shape == (1, len(ACTIONS))
    assert value.shape == (1,)


def test_cnn_accepts_a_timeframe_dict_and_rejects_bad_shapes_with_a_fix() -> None:
    cnn = MultiTimeframeCNN(CNNConfig.preset("small")).eval()
    out, _ = cnn({"1m": torch.zeros(2, WINDOW, N_BAR_FEATURES)})
    assert out.shape == (2, len(CNN_TIMEFRAMES), 3)
    with pytest.raises(ValueError, match="add a batch axis"):
        cnn(torch.zeros(len(CNN_TIMEFRAMES), WINDOW, N_BAR_FEATURES))
    with pytest.raises(ValueError, match="unknown timeframes"):
        cnn({"2m": torch.zeros(1, WINDOW, N_BAR_FEATURES)})


def test_cnn_timeframes_are_independent() -> None:
    """Grouped convolutions: changing one timeframe's bars changes only its head."""
    cnn = MultiTimeframeCNN(CNNConfig.preset("small")).eval()
    x = torch.randn(1, len(CNN_TIMEFRAMES), WINDOW, N_BAR_FEATURES)
    y = x.clone()
    y[0, 2] = torch.randn(WINDOW, N_BAR_FEATURES)
    with torch.inference_mode():
        a, b = cnn(x)[0], cnn(y)[0]
    changed = (a != b).any(dim=-1)[0]
    assert changed.tolist() == [k == 2 for k in range(len(CNN_TIMEFRAMES))]


def test_model_inputs_validate_shapes() -> None:
    with pytest.raises(ValueError, match=r"ModelInputs\.cob"):
        ModelInputs(
            bars=np.zeros((len(CNN_TIMEFRAMES), WINDOW, N_BAR_FEATURES), np.float32),
            bars_valid=np.ones(len(CNN_TIMEFRAMES), bool),
            cob=np.zeros(3, np.float32),
            dqn_state=np.zeros(DQN_INPUT, np.float32),
        )


@pytest.mark.parametrize("agent_cls", [CNNAgent, DQNAgent, COBAgent])
def test_agents_predict_and_report_status(agent_cls: type) -> None:
    agent = agent_cls(seed=1)
    pred = agent.predict(random_inputs())
    assert pred.action in (0, 1, 2)
    assert 0.0 <= pred.confidence <= 1.0
    assert abs(sum(pred.probs) - 1.0) < 1e-5
    st = agent.status()
    for key in (
        "params",
        "device",
        "predictions",
        "last_latency_ms",
        "last_loss",
        "loss_ma5",
        "training_steps",
        "epsilon",
        "skipped_updates",
    ):
        assert key in st
    assert st["predictions"] == 1
    assert st["params"] == agent.parameters
    assert st["device"] == "CPU"
    assert st["last_latency_ms"] > 0
    assert not agent.actor.training  # inference always in eval mode


def test_cnn_reports_only_valid_heads_and_ignores_invalid_rows() -> None:
    valid = (True, True, True, False, True, False, False)
    agent = CNNAgent(seed=0)
    inputs = random_inputs(valid=valid)
    pred = agent.predict(inputs)
    assert pred.per_tf is not None
    assert set(pred.per_tf) == {tf for tf, v in zip(CNN_TIMEFRAMES, valid, strict=True) if v}
    garbage = inputs.bars.copy()
    garbage[3] = np.nan  # a warming-up timeframe may hold anything
    garbage[5] = 1e6
    pred2 = agent.predict(ModelInputs(garbage, inputs.bars_valid, inputs.cob, inputs.dqn_state))
    assert pred2.probs == pred.probs
    assert pred2.confidence == pred.confidence


def test_non_finite_inputs_refuse_the_prediction() -> None:
    bad = random_inputs()
    bars = bad.bars.copy()
    bars[0, 5, 3] = np.nan
    cob, state = bad.cob.copy(), bad.dqn_state.copy()
    cob[0], state[7] = np.inf, np.nan
    agents = [CNNAgent(), DQNAgent(), COBAgent()]
    for agent in agents:
        with pytest.raises(NonFiniteInputError):
            agent.predict(ModelInputs(bars, bad.bars_valid, cob, state))
        assert agent.status()["refused_predictions"] == 1
        assert agent.predictions == 0
    with pytest.raises(InputNotReadyError):
        agents[0].predict(random_inputs(valid=(False,) * len(CNN_TIMEFRAMES)))


def test_dqn_epsilon_greedy_explores_then_exploits() -> None:
    agent = DQNAgent(seed=3)
    inputs = random_inputs()
    first = [agent.predict(inputs).explored for _ in range(200)]
    assert sum(first) > 100  # epsilon starts at 1.0 (a third of random draws hit greedy)
    agent.on_market_time(20 * agent.config.eps_decay_s)  # epsilon decays in market time within a session
    assert agent.epsilon == pytest.approx(agent.config.eps_end)
    greedy = agent.predict(inputs, explore=False)
    assert not greedy.explored
    assert greedy.action == int(np.argmax(greedy.probs))


@pytest.mark.parametrize("agent_cls", [CNNAgent, DQNAgent, COBAgent])
def test_same_seed_same_model_and_training_whatever_the_global_rng(agent_cls: type) -> None:
    inputs = random_inputs(4)
    a, b, c = agent_cls(seed=7), agent_cls(seed=7), agent_cls(seed=8)
    for agent in (a, b, c):
        torch.rand(1000)  # other code consuming the global generator must not matter
        for step in range(20):
            agent.train_on_reward(inputs, step % 3, 0.3 if step % 2 else -0.2)
    for (k, va), vb in zip(a.learner.state_dict().items(), b.learner.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.learner.parameters(), c.learner.parameters(), strict=True))
    assert a.predict(inputs).probs == b.predict(inputs).probs


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    assert device_description("cpu") == "CPU"
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["cnn", "dqn", "cob"])
def test_agents_on_cuda(kind: str) -> None:
    agent = AGENTS[kind](device="cuda", seed=0)
    inputs = random_inputs()
    assert agent.predict(inputs).action in (0, 1, 2)
    for _ in range(20):
        agent.train_on_reward(inputs, 0, 0.5)
    assert agent.status()["device"].startswith("GPU")
    assert agent.training_steps > 0


def test_read_only_inputs_are_copied_not_shared_with_torch() -> None:
    """The engine reuses read-only bar windows across decisions; torch must get its own
    memory for them (from_numpy of a read-only array is undefined behaviour and warns)."""
    import warnings

    inputs = random_inputs(5)
    arrays = {k: getattr(inputs, k).copy() for k in ("bars", "bars_valid", "cob", "dqn_state")}
    for a in arrays.values():
        a.flags.writeable = False
    ro = ModelInputs(**arrays)
    for agent in (CNNAgent(seed=0), DQNAgent(seed=0), COBAgent(seed=0)):
        t = agent._tensor(ro.cob)
        assert t.data_ptr() != ro.cob.ctypes.data
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            agent.predict(ro)
    writable = np.zeros(4, np.float32)
    assert CNNAgent(seed=0)._tensor(writable).data_ptr() == writable.ctypes.data  # no copy when not needed

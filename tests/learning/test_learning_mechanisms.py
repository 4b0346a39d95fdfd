"""Each learning mechanism, shown working (each test fails if its mechanism is taken out):
the DQN learns within its warm-up and explores less as a session goes on; the CNN learns a
confirmed perfect move with no position closed; the COB's policy keeps its entropy after
losing outcomes in one direction; an exploratory position keeps its minimum hold; credit
goes only to the models whose signal called the trade; the reward has one PnL term."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from engine.core.events import ModelTrained, PositionClosed, Side
from engine.kernel import backtest_session
from engine.learning.fusion import ModelSignal
from engine.learning.policy import DecisionPolicy
from engine.learning.rewards import RewardCalculator, RewardParams
from engine.testing import synth_market
from models.cob.cob_agent import COBAgent
from models.common.inputs import ModelInputs
from models.common.schema import BUY
from models.dqn.dqn_agent import DQNAgent
from tests.models.test_models_nets import random_inputs
from tests.support.config import settings_for

S = 1_000_000_000


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "planted.gz"
    synth_market.generate(path, "planted", 6, seed=21)
    return path


def run(cfg, path: Path) -> tuple[list[ModelTrained], object]:
    session = backtest_session(cfg, [path])
    trained: list[ModelTrained] = []
    session.engine.bus.on(ModelTrained, trained.append)
    session.replay.run_sync()
    assert session.brain is not None
    session.brain.wait_for_training()
    return trained, session


def test_dqn_updates_within_its_warm_up_from_the_first_outcomes():
    agent = DQNAgent(seed=1)
    x = random_inputs(3)
    assert agent.train_on_counterfactual(x, (0.4, 0.0, -0.6)) is None  # 3 transitions: still warming up
    assert agent.last_skip.startswith("replay warm-up: 3 of 4")
    assert agent.train_on_counterfactual(random_inputs(4), (-0.2, 0.0, 0.3)) is not None  # the second one teaches
    assert agent.training_steps > 0


def test_dqn_epsilon_decays_in_market_time_within_a_session(planted, tmp_path):
    cfg = settings_for(tmp_path, 'models.enabled=["dqn"]', "models.dqn_epsilon_decay_s=60")
    trained, session = run(cfg, planted)
    dqn = session.brain.agents["dqn"]
    first = min(t.ts for t in trained if t.model == "dqn")
    start = session.brain._session_start
    session.close()
    assert (first - start) / S < 60  # its first update comes within the first minute of the session
    assert dqn.market_s > 300 and dqn.epsilon < 0.05 + 0.95 * math.exp(-5) + 1e-9
    dqn.on_market_time(0.0)
    assert dqn.epsilon == pytest.approx(1.0)  # a new session starts exploring again


def test_cnn_learns_a_confirmed_perfect_move_with_no_position_closed(planted, tmp_path):
    cfg = settings_for(tmp_path, 'models.enabled=["cnn"]', "trading.auto_trade=false",
                       "learning.shadow_positions=false", "learning.probe_every_s=0")
    trained, session = run(cfg, planted)
    closed = len(session.engine.portfolio.closed)
    labels = session.brain.labels_known()
    session.close()
    assert closed == 0
    assert labels and {lb.timeframe for _, lb in labels} >= {"1s"}
    from_labels = [t for t in trained if t.model == "cnn" and t.source == "label"]
    assert from_labels and all(math.isfinite(t.loss) for t in from_labels)
    assert [t for t in trained if t.source != "label"] == []


def _entropy(agent: COBAgent, probe: ModelInputs) -> tuple[float, tuple[float, float, float]]:
    p = np.asarray(agent.predict(probe).probs)
    return float(-(p * np.log(p)).sum()), tuple(p)


def test_cob_policy_keeps_its_entropy_after_50_losing_outcomes_in_one_direction():
    agent = COBAgent(seed=5)
    probe = random_inputs(99)
    h0, p0 = _entropy(agent, probe)
    rng = np.random.default_rng(1)
    for _ in range(50):
        x = random_inputs(int(rng.integers(1_000_000)))
        agent.train_on_reward(x, BUY, -float(rng.uniform(0.2, 1.0)))
    h1, p1 = _entropy(agent, probe)
    assert p1[BUY] < p0[BUY]  # it learned that buying lost
    assert h1 > 0.5, (h0, h1, p1)  # and did not collapse onto one action (ln 3 = 1.10 is the most)


def _signals(score: float) -> dict[str, ModelSignal]:
    return {"dqn": ModelSignal("dqn", "SELL", 0.9, score, 0), "cob": ModelSignal("cob", "SELL", 0.9, score, 0)}


def test_an_exploratory_position_is_not_closed_before_its_minimum_hold(tmp_path):
    cfg = settings_for(tmp_path, "fusion.explore_min_hold_s=30", "fusion.min_hold_s=0", "fusion.max_hold_s=600")
    policy = DecisionPolicy(cfg)
    against = _signals(-0.9)  # strongly against the long
    held = {t: policy.decide(against, "BUY", 0, t * S, "", True, exploring=True).action for t in (5, 29, 31)}
    assert held == {5: "HOLD", 29: "HOLD", 31: "CLOSE"}
    assert policy.decide(against, "BUY", 0, 5 * S, "", True, exploring=False).action == "CLOSE"


def test_exploration_grows_rarer_as_the_record_grows(tmp_path):
    policy = DecisionPolicy(settings_for(tmp_path, "fusion.explore_rate=0.2", "fusion.explore_decay_trades=20"))
    assert policy.explore_chance(0) == pytest.approx(0.2)
    assert policy.explore_chance(20) == pytest.approx(0.1)
    assert policy.explore_chance(180) == pytest.approx(0.02)


def test_credit_goes_to_the_models_whose_signal_called_the_trade(tmp_path, planted):
    cfg = settings_for(tmp_path)
    session = backtest_session(cfg, [planted])
    brain = session.brain
    fresh = {"cnn": ModelSignal("cnn", "BUY", 0.8, 0.6, 0), "dqn": ModelSignal("dqn", "HOLD", 0.4, 0.0, 0),
             "cob": ModelSignal("cob", "SELL", 0.7, -0.5, 0)}
    assert brain._credits("BUY", fresh, "") == {"cnn": 0.6, "dqn": 0.0, "cob": 0.0}
    assert brain._credits("SELL", fresh, "") == {"cnn": 0.0, "dqn": 0.0, "cob": 0.5}
    assert brain._credits("BUY", fresh, "explore")["dqn"] == 1.0  # its epsilon draw opened it
    # the credit does not depend on which other models were on
    alone = {"cnn": fresh["cnn"]}
    assert brain._credits("BUY", alone, "")["cnn"] == brain._credits("BUY", fresh, "")["cnn"]
    session.close()


def test_fusion_weights_follow_each_models_own_record(tmp_path):
    policy = DecisionPolicy(settings_for(tmp_path, "fusion.record_weighting=50", "fusion.record_window=3",
                                         "fusion.open_threshold=0.2"))
    signals = {"cnn": ModelSignal("cnn", "HOLD", 0.5, 0.05, 0), "dqn": ModelSignal("dqn", "BUY", 0.9, 0.8, 0)}
    assert policy.decide(signals, None, None, 0, "", True).action == "HOLD"  # 0.7×0.05 + 0.15×0.8 over 0.85
    # the DQN's own calls paid, the CNN's lost their fees
    assert policy.follow_record("dqn", [-0.5, 0.01, 0.01, 0.01]) == pytest.approx(math.exp(1.5))  # last 3 only
    assert policy.follow_record("cnn", [-0.004, -0.004, -0.004]) == pytest.approx(math.exp(-0.6))
    assert policy.weights["dqn"] == pytest.approx(0.15 * math.exp(1.5))
    decision = policy.decide(signals, None, None, 0, "", True)
    assert decision.action == "BUY"
    assert {c.model: c.weight for c in decision.fused.contributions}["dqn"] > 0.5
    assert policy.follow_record("cob", [1.0] * 3) == pytest.approx(math.exp(3))  # at most about ×20
    assert policy.follow_record("cob", []) == 1.0  # no record: the weight from settings
    fixed = DecisionPolicy(settings_for(tmp_path, "fusion.record_weighting=0"))
    assert fixed.follow_record("dqn", [0.01] * 20) == 1.0 and fixed.weights == fixed.base_weights


def test_each_models_own_calls_make_its_record(planted, tmp_path):
    cfg = settings_for(tmp_path)
    _, session = run(cfg, planted)
    brain = session.brain
    own = {k: b.record.trades - b.record.explorations for k, b in brain.shadows.items()}
    records = {k: brain.agents[k].record() for k in brain.shadows}
    weights = dict(brain.policy.weights)
    session.close()
    assert any(own.values()), own
    assert {k: len(r) for k, r in records.items()} == own  # exploratory entries are left out
    for k, r in records.items():
        want = cfg.fusion.weights[k] * math.exp(max(-3.0, min(3.0, cfg.fusion.record_weighting * math.fsum(r[-20:]))))
        assert weights[k] == pytest.approx(want)


def _closed(pnl: str, hold_s: int = 60) -> PositionClosed:
    return PositionClosed(1, "ETHUSDT", Side.BUY, Decimal("0.04"), Decimal("2500"), Decimal("2501"), 0, hold_s * S,
                          Decimal("0.2"), Decimal(pnl))


def test_the_reward_counts_pnl_once_and_prices_the_risk_taken():
    calc = RewardCalculator(RewardParams())
    calm, wild = calc(_closed("0.4"), 0.001), RewardCalculator(RewardParams())(_closed("0.4"), 0.01)
    assert calm.components["pnl"] == pytest.approx(100 * 0.4 / 100)
    assert calm.components["risk"] == pytest.approx(-10 * 0.001)
    assert wild.components["pnl"] == calm.components["pnl"]  # the same PnL...
    assert wild.total < calm.total  # ...risked more, is worth less
    # no component is a second copy of PnL: doubling the PnL moves only the PnL term (and the streak/consistency)
    twice = RewardCalculator(RewardParams())(_closed("0.8"), 0.001)
    assert twice.components["risk"] == calm.components["risk"]
    assert RewardCalculator(RewardParams()).counterfactual(0.004, 0.002) == pytest.approx(0.4 - 0.02)


def test_hold_gets_its_counterfactual_from_every_probe(planted, tmp_path):
    cfg = settings_for(tmp_path, "trading.auto_trade=false", "learning.shadow_positions=false",
                       "learning.probe_every_s=5", "learning.online_perfect_moves=false")
    trained, session = run(cfg, planted)
    probes = session.brain.probes
    log = [line.text for line in session.engine.training_log]
    session.close()
    assert probes is not None and probes.settled > 40
    # The training log shows each model's first counterfactual update, though none is listed one by one.
    for name in ("CNN", "DQN", "COB"):
        assert f"{name} 1 update(s) from counterfactual probes" in " | ".join(log), log[:6]
    by_model = {m: sum(1 for t in trained if t.model == m and t.source == "counterfactual") for m in ("cnn", "dqn", "cob")}
    assert all(n >= probes.settled - 5 for n in by_model.values()), by_model

"""The models in the engine: signals, fused decisions with contributions, toggles,
determinism, and no decisions on a book that is not LIVE."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

import pytest

from engine.core.events import (
    DecisionMade,
    ModelTrained,
    Side,
    SignalEmitted,
    SubmitOrder,
    ToggleModel,
    TrainingSkipped,
)
from engine.kernel import replay_session
from tests.conftest import ETH, need_data
from tests.support.config import settings_for


def make_cfg(tmp_path, *extra):
    return settings_for(tmp_path, *extra)


def run(cfg, paths, on_decision=None):
    session = replay_session(cfg, paths, None)
    engine, replay = session.engine, session.replay
    decisions: list[DecisionMade] = []
    signals: list[SignalEmitted] = []
    engine.bus.on(SignalEmitted, signals.append)

    def record(ev):
        decisions.append(ev)
        if on_decision:
            on_decision(engine, ev)

    engine.bus.on(DecisionMade, record)
    replay.run_sync()
    summary = engine.summary()
    engine.shutdown()
    return engine, decisions, signals, summary


@pytest.fixture(scope="module")
def eth_run(tmp_path_factory):
    need_data(*ETH)
    cfg = make_cfg(tmp_path_factory.mktemp("brain"))
    return run(cfg, ETH)


def test_every_model_signals_and_decisions_record_contributions(eth_run):
    _, decisions, _, summary = eth_run
    assert all(summary["signals"][m] > 0 for m in ("cnn", "dqn", "cob")), summary["signals"]
    assert summary["decisions"] == len(decisions) > 100
    # 11 minutes of data: only the 1m head has enough bars; the summary says which warm up
    assert set(summary["cnn_warming_up"]) == {"5m", "15m", "1h", "4h", "1d"}
    for d in decisions:
        assert d.contributions, d
        assert sum(c.weight for c in d.contributions) == pytest.approx(1.0)
        for c in d.contributions:
            assert c.model in ("cnn", "dqn", "cob")
            assert c.action in ("BUY", "HOLD", "SELL")
            assert 0.0 <= c.confidence <= 1.0
    # the CNN joins once its 1m head has 5 bars; before that, DQN and COB decide alone
    first_cnn = next(i for i, d in enumerate(decisions) if any(c.model == "cnn" for c in d.contributions))
    assert 0 < first_cnn < len(decisions) - 1
    assert all({c.model for c in d.contributions} == {"dqn", "cob"} for d in decisions[:first_cnn])
    # every decision came while the ETH book was LIVE and one second of market time apart
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(decisions)]
    assert min(gaps) >= 1_000_000_000


def test_toggle_takes_effect_at_next_decision(tmp_path):
    need_data(*ETH)
    cfg = make_cfg(tmp_path)
    toggled_at = {}

    def toggle(engine, ev):
        if ev.decision_id == 200:
            engine.submit(ToggleModel("cob", False))
            toggled_at["off"] = ev.decision_id
        if ev.decision_id == 300:
            engine.submit(ToggleModel("cob"))  # flips back on

    _, decisions, _, summary = run(cfg, ETH[:1], toggle)
    assert len(decisions) > 310
    models = {d.decision_id: {c.model for c in d.contributions} for d in decisions}
    assert all("cob" in models[i] for i in range(1, 201))
    assert all("cob" not in models[i] for i in range(201, 301))
    assert any("cob" in models[i] for i in range(302, 310))
    assert summary["models"]["cob"]["enabled"] is True


def test_same_replay_same_seed_same_decisions(tmp_path):
    need_data(*ETH)

    def key(d):
        return (d.decision_id, d.action, round(d.score, 9), d.ts,
                tuple((c.model, c.action, round(c.confidence, 9), round(c.weight, 9)) for c in d.contributions))

    a = run(make_cfg(tmp_path / "a", "fusion.explore_rate=0.2", "fusion.max_hold_s=30"), ETH[:1])
    b = run(make_cfg(tmp_path / "b", "fusion.explore_rate=0.2", "fusion.max_hold_s=30"), ETH[:1])
    assert [key(d) for d in a[1]] == [key(d) for d in b[1]]
    assert a[3]["fills"] == b[3]["fills"]
    assert a[3]["realised_pnl"] == b[3]["realised_pnl"]
    assert a[3]["rewards"] == b[3]["rewards"]
    c = run(make_cfg(tmp_path / "c", "general.seed=8", "fusion.explore_rate=0.2", "fusion.max_hold_s=30"), ETH[:1])
    assert [key(d) for d in c[1]] != [key(d) for d in a[1]]


def test_no_decision_on_a_book_that_is_not_live(tmp_path):
    """Diffs without a REST snapshot keep the book SYNCING: trades flow, nothing decides."""
    need_data(*ETH)
    import gzip

    src = tmp_path / "ethusdt_nosnap.txt"
    with gzip.open(ETH[0], "rb") as fh, src.open("wb") as out:
        for _, line in zip(range(20000), fh, strict=False):
            if b'"lastUpdateId"' not in line:
                out.write(line)
    cfg = make_cfg(tmp_path)
    _, decisions, _, summary = run(cfg, [src])
    assert summary["trades"] > 1000
    assert summary["book_state"] == "SYNCING"
    assert decisions == []
    assert summary["decisions_skipped_not_live"] > 100
    assert summary["fills"] == 0


def test_manual_round_trip_trains_the_models(tmp_path):
    """A closed manual position gives a reward that trains each model (labelled example)."""
    need_data(*ETH)
    cfg = make_cfg(tmp_path, "fusion.explore_rate=0", "trading.auto_trade=false")
    session = replay_session(cfg, ETH[:1], None)
    engine, replay = session.engine, session.replay
    trained: list[ModelTrained] = []
    skipped: list[TrainingSkipped] = []
    engine.bus.on(ModelTrained, trained.append)
    engine.bus.on(TrainingSkipped, skipped.append)
    events = replay.events()
    placed = []
    for n, (ts, ev) in enumerate(events):
        replay.clock.advance(ts)
        engine.on_market(ev)
        st = engine.symbols.get("ETHUSDT")
        live = st is not None and st.book.state.value == "LIVE"
        if live and n > 5000 and not placed:
            engine.submit(SubmitOrder("ETHUSDT", Side.BUY, Decimal("0.05")))
            placed.append(n)
        if placed and n == placed[0] + 3000:
            engine.submit(SubmitOrder("ETHUSDT", Side.SELL, Decimal("0.05")))
        if placed and n == placed[0] + 4000:
            break  # the sell fills after paper.latency_ms of market time
    engine.run_commands()
    assert len(engine.portfolio.closed) == 1
    engine.brain.wait_for_training()
    rewards = engine.brain.rewards
    assert len(rewards) == 1 and rewards[0].position_id == engine.portfolio.closed[0].position_id
    pid = engine.portfolio.closed[0].position_id
    # The closed manual position is a labelled example for every model, each at full credit:
    # one real update apiece from it (only real updates are training events).
    account = [t for t in trained if t.source == "account"]
    assert sorted(t.model for t in account) == ["cnn", "cob", "dqn"]
    assert all(t.position_id == pid and t.scale == 1.0 and math.isfinite(t.loss) and t.step > 0 for t in account)
    assert not [x for x in skipped if x.source == "account"]
    steps = engine.brain.training_steps()
    assert {t.model: t.step for t in account}.keys() == steps.keys()
    ledger = engine.ledger
    ledger.flush()
    rows = ledger.query("SELECT model, position_id, scale FROM training WHERE source = 'account' ORDER BY model")
    assert rows == [("cnn", pid, 1.0), ("cob", pid, 1.0), ("dqn", pid, 1.0)]
    assert ledger.query("SELECT count(*) FROM training")[0][0] == len(trained)  # every row a real update
    assert ledger.query("SELECT count(*) FROM training_skips")[0][0] == len(skipped)
    (row,) = ledger.query("SELECT model, source, components FROM rewards WHERE source = 'account'")
    assert row[0] == "account" and "pnl" in row[2] and "risk" in row[2]
    engine.shutdown()
    # trained models were saved as checkpoints and load back
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert "cob-small.pt" in ckpts

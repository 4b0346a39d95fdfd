"""Learning judged where the answer is known (``tradedesk synth``), out of sample, after fees.

Walk-forward over three folds of a 30-minute session: the models learn from fold 0 on
with the desk's own loop and are judged, frozen, on the folds they never saw, beside
fresh models with the same seed and random entries with the same trades.

- default run: the ensemble on ``planted`` seed 1 beats its untrained arm and the
  random 95th percentile; on ``null`` seed 1 it does not beat the random 95th percentile
  (there is nothing to find, so a "win" there would be a leak);
- ``make test-slow``: the whole campaign of issue 11 (three seeds of each market, the
  ensemble and each model alone on each).

Every run is seeded end to end (the session, the models, the fills, the random draws),
so each figure is the same on every run; nothing here depends on timing.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.runs.walk_forward import walk_forward
from engine.testing import synth_market
from tests.support.config import settings_for

MINUTES = 30
FOLDS = 3


def session(tmp_path_factory: pytest.TempPathFactory, market: str, seed: int) -> Path:
    path = tmp_path_factory.mktemp(f"{market}{seed}") / f"{market}{seed}.gz"
    synth_market.generate(path, market, MINUTES, seed=seed)
    return path


def judge(path: Path, tmp_path: Path, *overrides: str) -> dict[str, Any]:
    cfg = settings_for(tmp_path, *overrides)
    wf = walk_forward(cfg, [path], FOLDS, progress=None).report["walk_forward"]
    oos = wf["out_of_sample"]
    return {
        "learning": Decimal(oos["learning"]["net_pnl"]),
        "trades": oos["learning"]["trades"],
        "untrained": Decimal(oos["untrained"]["net_pnl"]),
        "p95": Decimal(str(oos["random"].get("net_pnl_p95", "0"))),
        **wf["verdict"],
    }


@pytest.mark.timeout(1200)  # about 90 s alone on 2 cores; generous for a loaded box
def test_the_ensemble_learns_a_planted_market_and_beats_luck_out_of_sample(tmp_path_factory, tmp_path):
    got = judge(session(tmp_path_factory, "planted", 1), tmp_path)
    assert got["trades"] > 0, got
    assert got["learning_beats_untrained"] and got["learning"] > got["untrained"], got
    assert got["learning_beats_random_p95"] and got["learning"] > got["p95"], got


@pytest.mark.timeout(1200)
def test_the_ensemble_finds_nothing_in_a_null_market(tmp_path_factory, tmp_path):
    got = judge(session(tmp_path_factory, "null", 1), tmp_path)
    assert not got["learning_beats_random_p95"], got


ARMS = {"ensemble": (), "cnn": ('models.enabled=["cnn"]',), "dqn": ('models.enabled=["dqn"]',),
        "cob": ('models.enabled=["cob"]',)}
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Issue 11's campaign: planted and null, three seeds each; the ensemble and each model
    alone on every session (about 12 minutes on 2 cores)."""
    results: dict[tuple[str, str, int], dict[str, Any]] = {}
    for market in ("planted", "null"):
        for seed in SEEDS:
            path = session(tmp_path_factory, market, seed)
            for arm, overrides in ARMS.items():
                results[market, arm, seed] = judge(path, tmp_path_factory.mktemp(f"{market}{seed}{arm}"), *overrides)
    for key, got in results.items():
        print(f"{key}: learning {got['learning']:+.4f} ({got['trades']} trades) untrained {got['untrained']:+.4f} "
              f"p95 {got['p95']:+.4f} rank {got['rank_vs_random']:.1f} %")
    return results


@pytest.mark.slow
@pytest.mark.timeout(7200)  # the first test builds the whole campaign
@pytest.mark.parametrize("arm", ["cnn", "dqn", "cob"])
def test_each_model_alone_beats_its_untrained_arm_in_two_of_three_planted_seeds(campaign, arm):
    wins = [s for s in SEEDS if campaign["planted", arm, s]["learning_beats_untrained"]]
    assert len(wins) >= 2, {s: campaign["planted", arm, s] for s in SEEDS}


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("arm", list(ARMS))
def test_no_arm_beats_the_random_p95_in_more_than_one_null_seed(campaign, arm):
    hits = [s for s in SEEDS if campaign["null", arm, s]["learning_beats_random_p95"]]
    assert len(hits) <= 1, {s: campaign["null", arm, s] for s in SEEDS}


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_the_ensemble_beats_untrained_and_random_p95_in_every_planted_seed(campaign):
    for seed in SEEDS:
        got = campaign["planted", "ensemble", seed]
        assert got["learning_beats_untrained"] and got["learning_beats_random_p95"], (seed, got)

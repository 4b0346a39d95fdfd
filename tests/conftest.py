"""Shared fixtures: the real recordings in ../shared/data and isolated settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "binance-spot"
BTC = [DATA / "btcusdt_20240808.gz", DATA / "btcusdt_20240809.gz"]
ETH = [DATA / "ethusdt_20240808.gz", DATA / "ethusdt_20240809.gz"]
ALL = BTC + ETH


def need_data(*paths: Path) -> None:
    """Skip (or, under CI, fail) when the shared recordings are absent."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        msg = f"the shared Binance recordings are missing: {', '.join(missing)} (expected ../shared/data beside the repo)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture
def data_files() -> list[Path]:
    need_data(*ALL)
    return ALL


@pytest.fixture
def btc_files() -> list[Path]:
    need_data(*BTC)
    return BTC


@pytest.fixture
def cfg(tmp_path: Path):
    """Built-in defaults, data directory in a temp folder, and immediate paper fills.

    Tests of the order path check fills right after the command; the ones that exercise
    the latency model (and the brain tests, on the real default) set it themselves.
    """
    from tests.support.config import settings_for

    return settings_for(tmp_path / "data", "paper.latency_ms=0")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the reliability figures the tests measured (also in $TRADEDESK_SCORECARD)."""
    from tests.support.scorecard import RECORDED

    if RECORDED:
        terminalreporter.section("reliability figures")
        for area, figures in RECORDED:
            terminalreporter.write_line(f"{area}: " + ", ".join(f"{k} = {v}" for k, v in figures.items()))

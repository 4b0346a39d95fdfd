"""The main chart's markers over real bars from the BTCUSDT recording: executed trades as
▲/▼, and a buy and a sell in the same cell as one ◆ so neither hides the other."""

from __future__ import annotations

import pytest

from engine.core.snapshot import Marker
from engine.kernel import replay_session
from tests.conftest import BTC, need_data
from tests.support.config import settings_for
from tui.widgets.charts import PriceChart, SecondsChart


@pytest.fixture(scope="module")
def snap(tmp_path_factory):

    need_data(*BTC)
    btc_files = BTC
    cfg = settings_for(tmp_path_factory.mktemp("data"), "models.enabled=[]")
    session = replay_session(cfg, btc_files, None)
    engine, replay = session.engine, session.replay
    replay.run_sync()
    return engine.snapshot()


def draw(chart, snap, markers, w=90, h=20):
    return chart.render_chart(w, h, snap.candles, tuple(markers), snap.chart_tf).plain


def test_fills_on_different_bars_show_as_buy_and_sell(snap):
    c1, c2 = snap.candles[2], snap.candles[5]
    text = draw(PriceChart(), snap, [Marker(c1.open_time + 1, c1.close, "BUY"),
                                     Marker(c2.open_time + 1, c2.close, "SELL")])
    assert text.count("▲") == 1
    assert text.count("▼") == 1
    assert "◆" not in text


def test_a_buy_and_a_sell_in_one_cell_show_as_both(snap):
    c = snap.candles[3]
    text = draw(PriceChart(), snap, [Marker(c.open_time + 1, c.close, "BUY"),
                                     Marker(c.open_time + 2, c.close + 0.01, "SELL")])
    assert text.count("◆") == 1
    assert "▲" not in text
    assert "▼" not in text


def test_markers_before_the_first_bar_shown_are_dropped(snap):
    first = snap.candles[0]
    text = draw(PriceChart(), snap, [Marker(first.open_time - 1, first.open, "BUY")])
    assert "▲" not in text


def test_signals_solid_when_executed_hollow_when_not(snap):
    secs = snap.seconds
    a, b = secs[-50], secs[-20]  # within the last seconds the chart shows
    text = SecondsChart().render_chart(100, 12, secs, (Marker(a.open_time, a.close, "BUY", executed=True),
                                                        Marker(b.open_time, b.close, "SELL", executed=False))).plain
    assert "▲" in text
    assert "▽" in text
    assert "△" not in text
    assert "▼" not in text

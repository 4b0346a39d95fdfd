"""``tradedesk synth``: markets with a known answer.

The sessions replay through the whole engine path cleanly, are byte-reproducible, are
spelt as Binance spells them, and show (``planted``) or do not show (``null``) the
documented lead-lag when it is measured from the replayed books, not from the
generator's own state.
"""

from __future__ import annotations

import gzip
import math
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import pytest

from engine.core.events import Bar, BestBidAsk, BookDelta, BookSnapshot, Trade
from engine.kernel import replay_session
from engine.market.book import SyncedBook
from engine.market.parse import Parser
from engine.testing import synth_market as sm
from tests.conftest import ROOT
from tests.support.config import settings_for

pytestmark = pytest.mark.timeout(240)

NUMBER = re.compile(rb'"[0-9]+\.[0-9]{8}"')
TICK = Decimal("0.01")
STEP = {"ETHUSDT": Decimal("0.0001"), "BTCUSDT": Decimal("0.00001")}


def replay(path: Path, tmp_path: Path, on_bar=None):
    """The kernel's backtest session over ``path`` (no models); returns (summary, session)."""
    session = replay_session(settings_for(tmp_path), [path], None, mode="backtest", models=False)
    if on_bar is not None:
        session.engine.on_bar_closed(lambda bar: on_bar(session.engine, bar))
    session.replay.run_sync()
    summary = session.engine.summary()
    summary["parser"] = session.replay.parser.stats.as_dict()
    summary["lines"] = session.replay.lines
    session.close()
    return summary


@pytest.mark.parametrize("market", ["planted", "null"])
def test_sessions_replay_with_no_gap_resync_or_crossed_book(market, tmp_path):
    path = tmp_path / f"{market}.gz"
    gen = sm.generate(path, market, 4, seed=7)
    s = replay(path, tmp_path)
    assert s["parser"]["rejected_total"] == 0
    assert s["lines"] == s["messages"] == gen.lines
    assert (s["gaps_detected"], s["book_resyncs"], s["crossed_books"], s["duplicate_trades"]) == (0, 0, 0, 0)
    assert set(s["per_symbol"]) == {"ETHUSDT", "BTCUSDT"}
    for sym, per in s["per_symbol"].items():
        counts = gen.per_symbol[sym]
        assert per["book_state"] == "LIVE"
        assert per["book_snapshots"] == 1
        assert per["trades"] == counts.trades > 800  # ~4 a second: every one applied
        assert per["book_updates"] == counts.diffs > 2300  # one diff per 100 ms (bar a quiet step)
        assert per["bbo_updates"] == counts.book_tickers
        assert per["stale_diffs_dropped"] == 0
        assert per["late_trades"] == 0
        assert per["bars"]["1m"] >= 3


def test_wire_format_is_binance_spelling(tmp_path):
    """Every line read back independently: receive order, the update-id chain, trade ids,
    number spelling and grids, and a book that is never crossed or locked."""
    path = tmp_path / "planted.txt"
    sm.generate(path, "planted", 3, seed=11)
    parser = Parser()
    books = {s: SyncedBook(s) for s in ("ETHUSDT", "BTCUSDT")}
    last_recv = 0
    last_u: dict[str, int] = {}
    last_trade: dict[str, int] = {}
    seen = {"snap": 0, "diff": 0, "trade": 0, "ticker": 0}
    for raw in path.read_bytes().splitlines():
        stamp, _, payload = raw.partition(b" ")
        recv = int(stamp)
        assert recv >= last_recv
        last_recv = recv
        assert b" " not in payload  # compact, as Binance sends it
        obj = orjson.loads(payload)
        for num in re.findall(rb'"[^"]*[0-9]\.[0-9][^"]*"', payload):
            assert NUMBER.fullmatch(num), num
        ev = parser.parse_frame(payload, recv)
        assert ev is not None, raw[:200]
        book = books[ev.symbol]
        data = obj["data"]
        if isinstance(ev, BookSnapshot):
            seen["snap"] += 1
            assert len(ev.bids) >= 50 and len(ev.asks) >= 50
            assert recv < sm.START_MS * 1_000_000 + 100_000_000  # before the first diff
            book.on_snapshot(ev)
            levels = list(ev.bids) + list(ev.asks)
        elif isinstance(ev, BookDelta):
            seen["diff"] += 1
            assert (data["E"] - sm.START_MS) % sm.STEP_MS == 0
            assert recv >= data["E"] * 1_000_000 + sm.RECV_DELAY_NS
            if ev.symbol not in last_u:
                assert ev.first_id <= book.last_update_id + 1 <= ev.final_id  # straddles the snapshot
            else:
                assert ev.first_id == last_u[ev.symbol] + 1
            last_u[ev.symbol] = ev.final_id
            book.on_delta(ev)
            levels = list(ev.bids) + list(ev.asks)
            bb, ba = book.best_bid(), book.best_ask()
            assert bb is not None and ba is not None
            assert TICK <= ba - bb <= 3 * TICK  # never crossed nor locked; 1-3 ticks
            assert len(book.book.bids) >= 50 and len(book.book.asks) >= 50
        elif isinstance(ev, Trade):
            seen["trade"] += 1
            assert ev.trade_id == last_trade.get(ev.symbol, ev.trade_id - 1) + 1
            last_trade[ev.symbol] = ev.trade_id
            assert data["E"] == data["T"] and recv >= data["T"] * 1_000_000 + sm.RECV_DELAY_NS
            # A taker buy lifts the best ask (m=false), a taker sell hits the best bid.
            assert ev.price == (book.best_bid() if ev.buyer_is_maker else book.best_ask())
            assert ev.qty <= (book.book.bids if ev.buyer_is_maker else book.book.asks)[ev.price]
            levels = [(ev.price, ev.qty)]
        else:
            assert isinstance(ev, BestBidAsk)
            seen["ticker"] += 1
            assert ev.update_id == last_u[ev.symbol]  # the diff's final id
            assert (ev.bid, ev.bid_qty, ev.ask, ev.ask_qty) == (
                book.best_bid(), book.book.bids[book.best_bid()], book.best_ask(), book.book.asks[book.best_ask()])
            levels = [(ev.bid, ev.bid_qty), (ev.ask, ev.ask_qty)]
        for p, q in levels:
            assert p % TICK == 0 and q % STEP[ev.symbol] == 0, (p, q)
    assert seen["snap"] == 2 and min(seen.values()) > 0
    assert all(b.state.value == "LIVE" and b.counters.crossed == 0 for b in books.values())


def test_same_arguments_same_bytes_another_seed_differs(tmp_path):
    a = sm.generate(tmp_path / "a.gz", "planted", 3, seed=5)
    b = sm.generate(tmp_path / "elsewhere" / "b.gz", "planted", 3, seed=5)
    c = sm.generate(tmp_path / "c.gz", "planted", 3, seed=6)
    plain = sm.generate(tmp_path / "a.txt", "planted", 3, seed=5)
    data = (tmp_path / "a.gz").read_bytes()
    assert data == (tmp_path / "elsewhere" / "b.gz").read_bytes()  # names and clocks are not in the bytes
    assert data != (tmp_path / "c.gz").read_bytes()
    assert gzip.decompress(data) == (tmp_path / "a.txt").read_bytes()
    assert a.as_dict() | {"path": ""} == b.as_dict() | {"path": ""} == plain.as_dict() | {"path": ""}
    assert c.corr_x_fwd30 != a.corr_x_fwd30
    # null with the same seed shares the pressure and the flow: the same trades, another price law
    n = sm.generate(tmp_path / "n.gz", "null", 3, seed=5)
    assert {s: c.trades for s, c in n.per_symbol.items()} == {s: c.trades for s, c in a.per_symbol.items()}


def test_the_mechanism_in_numbers():
    """The figures the README quotes follow from the constants."""
    assert sm.MU_PER_STRENGTH * sm.TAU_S * (1 - math.exp(-1)) == pytest.approx(0.0038, abs=1e-4)
    assert sm.expected_corr_fwd("planted") == pytest.approx(0.678, abs=1e-3)
    assert sm.expected_corr_fwd("null") == 0.0 == sm.expected_corr_fwd("planted", strength=0)
    assert sm.expected_vol("null") == pytest.approx(sm.expected_vol("planted"), rel=1e-12)
    assert sm.sigma_null(0) == sm.SIGMA
    # at 30 s the planted price wanders further than null's (matched at 10 s only)
    assert sm.expected_vol("planted", horizon_s=30) > 1.2 * sm.expected_vol("null", horizon_s=30)


def _sample_eth(samples: dict[int, tuple[float, float]]):
    """A bar listener: at every ETHUSDT 1-s bar close, the engine's own book mid and top-5 imbalance."""

    def on_bar(engine, bar: Bar) -> None:
        if bar.symbol != "ETHUSDT" or bar.timeframe != "1s":
            return
        book = engine.symbols["ETHUSDT"].book
        b = sum(q for _, q in book.book.top_bids(5))
        a = sum(q for _, q in book.book.top_asks(5))
        samples[bar.open_time // 1_000_000_000] = (float(book.mid()), float((b - a) / (b + a)))

    return on_bar


def _predictive_figures(samples: dict[int, tuple[float, float]]) -> tuple[float, float]:
    """(corr(imbalance now, log return of the mid over the next 30 s), 10-s RMS volatility)."""
    imb, fwd, ten = [], [], []
    for t, (mid, im) in samples.items():
        if t + 30 in samples:
            imb.append(im)
            fwd.append(math.log(samples[t + 30][0] / mid))
        if t + 10 in samples:
            ten.append(math.log(samples[t + 10][0] / mid))
    return float(np.corrcoef(imb, fwd)[0, 1]), float(np.sqrt(np.mean(np.square(ten))))


def test_planted_predicts_the_mid_and_null_does_not(tmp_path):
    """Measured in the engine, on its replayed books, over 60 minutes of each market.

    Why 60 minutes and these bounds: the pressure lives ~30 s, so an hour holds only ~120
    independent 30-s stretches. Under null the sample correlation of a 30-s-persistent
    signal with overlapping 30-s returns has a standard deviation of about sqrt(22 s / T):
    0.08 for T = 1 h (0.07 measured over 12 seeds), 0.11 over 30 min, 0.29 over 5 min,
    too noisy to test. The mechanism gives corr(x, next 30 s) = mu tau (1 - e^-1) /
    sd(30-s return) = 0.68 at strength 1, and the top-5 imbalance tracks x closely (0.65
    over 12 seeds of an hour, sd 0.04). So null must stay under 0.3 (about 4 sd) and
    planted above 0.45 (about 5 sd below its mean). The 10-s volatilities match by
    construction; their ratio varies with the realised pressure (planted's drift is 70 %
    of its 10-s variance): sd 0.06 over an hour, so +-15 % is 2.5 sd. Seed 1 gives
    planted 0.58, null -0.09, ratio 0.97.
    """
    figures = {}
    for market in ("planted", "null"):
        path = tmp_path / f"{market}.txt"
        gen = sm.generate(path, market, 60, seed=1)
        samples: dict[int, tuple[float, float]] = {}
        s = replay(path, tmp_path, _sample_eth(samples))
        assert (s["gaps_detected"], s["book_resyncs"], s["crossed_books"], s["book_state"]) == (0, 0, 0, "LIVE")
        assert len(samples) > 3400  # a 1-s bar for nearly every second (a second with no trade has none)
        corr, vol = _predictive_figures(samples)
        figures[market] = corr, vol
        # the generator's own figures (every 100 ms, from its published book) agree
        assert gen.corr_imbalance_fwd30 == pytest.approx(corr, abs=0.05)
        assert gen.vol_10s == pytest.approx(vol, rel=0.05)
    (p_corr, p_vol), (n_corr, n_vol) = figures["planted"], figures["null"]
    assert p_corr > 0.45, figures
    assert abs(n_corr) < 0.3, figures
    assert 0.85 < p_vol / n_vol < 1.15, figures
    assert n_vol == pytest.approx(sm.expected_vol("null"), rel=0.1)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tui.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_a_session_and_refuses_bad_arguments(tmp_path):
    data = ["--set", f'general.data_dir="{tmp_path}"']
    out = tmp_path / "new" / "folder" / "null.gz"
    r = run_cli("synth", "--market", "null", "--minutes", "1", "--seed", "3", "--out", out, *data)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and out.read_bytes()[:2] == b"\x1f\x8b"
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synth null seed 3") and str(out) in lines[0]
    assert gzip.decompress(out.read_bytes()).count(b"\n") == int(lines[0].split(": ")[1].split()[0])
    for bad, arg in ((["--minutes", "0"], "--minutes"), (["--minutes", "2", "--strength", "-1"], "--strength"),
                     (["--minutes", "2", "--market", "sideways"], "--market")):
        r = run_cli("synth", "--market", "planted", "--seed", "1", "--out", tmp_path / "x.gz", *bad, *data)
        assert r.returncode == 2, (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and arg in r.stderr, r.stderr
    assert not (tmp_path / "x.gz").exists()

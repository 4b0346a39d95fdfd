"""Record a live session from the fake exchange, replay the file: same trades, bars and book."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys

import pytest

from engine.execution.ledger import Ledger
from engine.kernel import replay_session
from engine.market.recorder import Recorder
from engine.testing.fake_exchange import FakeExchange, Scenario
from models.common.schema import TIMEFRAMES
from tests.conftest import ROOT
from tests.support.livekit import live_settings, run_live

pytestmark = pytest.mark.timeout(180)


async def test_recording_replays_to_the_same_trades_bars_and_book(data_files, tmp_path):
    path = tmp_path / "session.gz"
    # A reconnect (with frames lost meanwhile), a diff gap, a duplicate and a bad frame: the
    # recording must carry the resyncs' snapshots and the junk, exactly as received.
    sc = Scenario(window_s=40, history_s=90, drop_every=3000, max_drops=1, lost_on_reconnect=30, gaps=1,
                  duplicates=2, malformed=1, seed=21)
    run = await run_live(data_files, sc, tmp_path, recorder=Recorder(path))
    live = run.engine
    rec = run.driver.recorder
    assert rec is not None
    assert rec.closed
    # Every snapshot the books took went into the file: 2 at start, 2 after the drop, 1 after the gap.
    assert rec.snapshots == sum(st.book.counters.snapshots for st in live.symbols.values()) == 5
    with gzip.open(path, "rb") as fh:
        lines = fh.read().splitlines()
    assert len(lines) == rec.lines == run.driver.parser.stats.messages - run.driver.parser.stats.rejected["binary_frame"]
    assert sum(b'@depthSnapshot","data":{"lastUpdateId":' in line for line in lines) == rec.snapshots
    stamps = [int(line.split(b" ", 1)[0]) for line in lines]
    assert stamps == sorted(stamps)

    session = replay_session(live_settings(tmp_path), [path], None, models=False, ledger=Ledger.memory())
    replayed, replay = session.engine, session.replay
    replay.run_sync()

    for sym in ("BTCUSDT", "ETHUSDT"):
        a, b = live.symbols[sym], replayed.symbols[sym]
        assert (a.trades, a.last_trade_id, a.duplicate_trades) == (b.trades, b.last_trade_id, b.duplicate_trades)
        assert a.trades == run.fx.stats.trades(sym)
        for tf in TIMEFRAMES:
            seeded = run.driver.backfilled[sym].get(tf, 0)  # history from klines: live only
            assert list(a.bars.closed[tf])[seeded:] == list(b.bars.closed[tf]), (sym, tf)
            assert a.bars.all_bars(tf)[-1:] == b.bars.all_bars(tf)[-1:]  # the bar still open, too
            assert a.bars.counts[tf] == b.bars.counts[tf]
        assert a.bars.counts["1s"] > 20
        assert a.book.last_update_id == b.book.last_update_id
        assert a.book.book.top_bids(200) == b.book.book.top_bids(200)
        assert a.book.book.top_asks(200) == b.book.book.top_asks(200)
        assert run.book_matches_exchange(sym)
    assert replay.parser.stats.rejected == run.driver.parser.stats.rejected  # the same junk, refused the same way
    assert sum(replay.parser.stats.rejected.values()) == 1


async def test_record_command_then_replay_command(data_files, tmp_path):
    out = tmp_path / "rec.txt"
    summary = tmp_path / "replay.json"
    common = ["--set", f'general.data_dir="{tmp_path}"', "--set", "models.enabled=[]"]
    async with FakeExchange(data_files, Scenario(window_s=20)) as fx:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tui.cli", "record", "--out", str(out), "--minutes", "2", "--until-closed",
            "--set", f"exchange.ws_url={fx.ws_url}", "--set", f"exchange.rest_url={fx.rest_url}", *common,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        sent = fx.stats.trades()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "replay with: tradedesk replay" in err.decode()
    lines = out.read_bytes().splitlines()
    assert sum(b"@depthSnapshot" in line for line in lines) == 2  # one REST snapshot per symbol
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui.cli", "replay", str(out), "--speed", "max", "--headless",
        "--summary-json", str(summary), *common, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    s = json.loads(summary.read_text())
    assert s["trades"] == sent > 100
    assert s["book_state"] == "LIVE"
    assert s["gaps_detected"] == 0

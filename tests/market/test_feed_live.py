"""The live desk end to end against the fake exchange: the headless CLI, the klines
back-fill and exchange filters, offline behaviour, and the feed's settings and backoff."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import socket
import sys
import time
from decimal import Decimal

import pytest

from engine.core import settings
from engine.execution.ledger import Ledger
from engine.kernel import live_session
from engine.market.feeds.base import Backoff
from engine.market.feeds.rest import RestClient, RestError, parse_klines
from engine.testing.fake_exchange import FakeExchange, Scenario
from models.common.schema import WINDOW
from tests.conftest import ROOT
from tests.support.livekit import live_settings, run_live

pytestmark = pytest.mark.timeout(180)


async def run_cli(*args: str, timeout: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "tui.cli", *args, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, (out + err).decode()


# ---------------------------------------------------------------------------- done when (1)


async def test_headless_live_cli_reaches_live_books_and_counts_every_trade(data_files, tmp_path):
    out = tmp_path / "summary.json"
    async with FakeExchange(data_files, Scenario(window_s=75, history_s=60, ping_interval_s=1.0)) as fx:
        rc, log = await run_cli(
            "--headless", "--set", f"exchange.ws_url={fx.ws_url}", "--set", f"exchange.rest_url={fx.rest_url}",
            "--set", f'general.data_dir="{tmp_path}"', "--set", "models.enabled=[]",
            "--until-closed", "--max-seconds", "100", "--summary-json", str(out))
        sent = fx.stats
    assert rc == 0, log[-3000:]
    s = json.loads(out.read_text())
    assert s["trades"] == sent.trades() > 500  # every trade the exchange sent, once
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert s["per_symbol"][sym]["trades"] == sent.trades(sym)
        assert s["feed"]["books_reached_live"][sym]
        assert s["per_symbol"][sym]["bars"]["1s"] > 30
        assert s["per_symbol"][sym]["bars"]["1m"] >= 1
        assert s["per_symbol"][sym]["book_updates"] > 100
    assert s["messages"] == sent.frames_sent + s["per_symbol"]["BTCUSDT"]["book_snapshots"] \
        + s["per_symbol"]["ETHUSDT"]["book_snapshots"]
    assert s["gaps_detected"] == 0
    assert s["feed"]["reconnects"] == 0
    assert s["parser"]["rejected_total"] == 0
    assert "exchange gone" in s["feed"]["stopped_because"]  # it ended by itself when the data did
    assert s["feed"]["filters"] == "exchangeInfo"


# ---------------------------------------------------------------------------- done when (4)


async def test_backfill_from_klines_warms_indicators_and_lists_what_is_missing(data_files, tmp_path):
    def setup(fx):
        fx.filters["ETHUSDT"]["step"] = "0.00100000"  # not the built-in default: proves exchangeInfo is used
        return None

    sc = Scenario(history_s=150, window_s=10, klines_fail=("1h",))
    run = await run_live(data_files, sc, tmp_path, setup=setup)
    eth = run.engine.symbols["ETHUSDT"]
    assert eth.filters.step_size == Decimal("0.001")
    assert eth.filters.min_notional == Decimal("5")
    assert run.engine.symbols["BTCUSDT"].filters.step_size == Decimal("0.00001")

    # Independent 1m bars from the raw trade lines before the stream started.
    start = run.fx.stream[0].ts
    want: dict[int, list] = {}
    for path in [p for p in data_files if "eth" in p.name]:
        with gzip.open(path, "rt") as fh:
            for line in fh:
                ts, payload = line.split(" ", 1)
                if int(ts) >= start:
                    break
                msg = json.loads(payload)
                if msg.get("stream") == "ethusdt@trade":
                    d = msg["data"]
                    b = d["T"] - d["T"] % 60_000
                    p, q = Decimal(d["p"]), Decimal(d["q"])
                    k = want.setdefault(b, [p, p, p, p, Decimal(0)])
                    k[1], k[2], k[3] = max(k[1], p), min(k[2], p), p
                    k[4] += q
    closed = sorted(want)[:-1]  # the last minute was still open when the desk started
    seeded = list(eth.bars.closed["1m"])[: len(closed)]
    assert run.driver.backfilled["ETHUSDT"]["1m"] == len(closed) >= 2
    assert [b.open_time // 1_000_000 for b in seeded] == closed
    for b in seeded:
        assert [b.open, b.high, b.low, b.close, b.volume] == want[b.open_time // 1_000_000]
    # Indicators saw the history first: every seeded bar plus every live close.
    assert eth.features["1m"].count == len(closed) + eth.bars.counts["1m"]
    assert eth.features["1s"].count >= WINDOW  # 150 s of 1 s klines: a full model window
    warming = run.driver.summary_extra()["feed"]["warming_up"]
    assert "1s" not in warming  # filled
    assert {"1m", "5m", "15m", "1h", "4h", "1d"} <= set(warming)  # short of a window, or failed
    assert "1h" not in run.driver.backfilled["ETHUSDT"]
    assert "ETHUSDT 1h" in run.driver.backfill_errors
    assert run.engine.feed_info["warming_up"] == warming


def test_parse_klines_drops_the_open_bar_and_bad_rows():
    rows = [
        [60_000, "10.0", "12.0", "9.0", "11.0", "2.5", 119_999, "27.5", 3, "1.0", "11", "0"],
        [120_000, "11.0", "NaN", "9.0", "11.0", "2.5", 179_999, "27.5", 3, "1.0", "11", "0"],  # refused
        [180_000, "11.0", "11.5", "10.5", "11.2", "0", 239_999, "0", 0, "0", "0", "0"],
        [240_000, "11.2", "11.3", "11.1", "11.3", "1", 299_999, "11.3", 1, "1", "11.3", "0"],  # still open
    ]
    bars = parse_klines(json.dumps(rows).encode(), "ETHUSDT", "1m")
    assert [b.open_time for b in bars] == [60_000_000_000, 180_000_000_000]
    assert (bars[0].high, bars[0].volume, bars[0].buy_volume, bars[0].trades) == (Decimal("12.0"), Decimal("2.5"),
                                                                                   Decimal("1.0"), 3)


# ---------------------------------------------------------------------------- offline


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_exchange_says_so_keeps_retrying_then_recovers(data_files, tmp_path):
    port = _free_port()
    cfg = live_settings(tmp_path, None, f'exchange.ws_url="ws://127.0.0.1:{port}"',
                        f'exchange.rest_url="http://127.0.0.1:{port}"', "exchange.backoff_base_s=0.05",
                        "exchange.backoff_max_s=0.4", "exchange.timeout_s=1.0")
    session = live_session(cfg, models=False, ledger=Ledger.memory(), max_seconds=60)
    engine, driver = session.engine, session.live
    task = asyncio.create_task(driver.run())
    deadline = time.monotonic() + 60
    while len(driver.feed.delays) < 6 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    status = str(engine.feed_info["status"])
    assert f"cannot reach ws://127.0.0.1:{port}" in status
    assert "retrying in" in status
    assert "tradedesk replay" in status
    assert "tradedesk demo" in status
    assert not task.done()  # it keeps trying
    d = driver.feed.delays
    assert all(0.025 <= x <= 0.4 for x in d)  # jittered around a doubling ladder, capped
    assert max(d[4:]) > min(d[:2])  # the ladder climbed
    assert all(st["state"] != "LIVE" for st in engine.feed_info["streams"].values())
    # The exchange comes back on the same address: the desk connects and syncs by itself.
    async with FakeExchange(data_files, Scenario(window_s=10, speed=5), port=port):
        while not all(engine.symbols[s].book.state.value == "LIVE" for s in ("BTCUSDT", "ETHUSDT")):
            assert time.monotonic() < deadline + 120, engine.feed_info["status"]
            await asyncio.sleep(0.05)
        while not str(engine.feed_info["status"]).startswith("live on"):  # the next status tick
            assert time.monotonic() < deadline + 120, engine.feed_info["status"]
            await asyncio.sleep(0.05)
        driver.stop("test done")
        await asyncio.wait_for(task, 60)
    assert driver.feed.counters.failed_connects >= 6
    assert driver.feed.counters.connects == 1


async def test_rest_client_honours_retry_after_and_gives_up_on_4xx(data_files):
    async with FakeExchange(data_files, Scenario(window_s=5, depth_429=1, retry_after_s=1, depth_5xx=1,
                                                 close_at_end=False)) as fx:
        rest = RestClient(fx.rest_url, backoff_base_s=0.01, backoff_max_s=0.05, rng=random.Random(1))
        try:
            t0 = time.monotonic()
            body = await rest.depth("ETHUSDT", 100)
            assert time.monotonic() - t0 >= 1.0  # waited the Retry-After before trying again
            assert json.loads(body)["lastUpdateId"] > 0
            assert rest.counters["rate_limited"] == 1
            assert rest.counters["server_errors"] == 1
            with pytest.raises(RestError, match="HTTP 400"):
                await rest.depth("NOPEUSDT", 100)
        finally:
            await rest.close()


# ---------------------------------------------------------------------------- settings and backoff


@pytest.mark.parametrize(("override", "named"), [
    ('exchange.ws_url="http://example.com"', "exchange.ws_url"),
    ('exchange.rest_url="ftp://example.com"', "exchange.rest_url"),
    ("exchange.stale_after_s=0", "exchange.stale_after_s"),
    ("exchange.backoff_base_s=40", "exchange.backoff_base_s"),  # above backoff_max_s (30)
    ("exchange.snapshot_limit=100000", "exchange.snapshot_limit"),
    ('exchange.extra_venues=["Not An Id"]', "exchange.extra_venues"),
    ("exchange.ping_timeout_s=nan", "exchange.ping_timeout_s"),
])
def test_bad_exchange_settings_are_refused_by_name(override, named):
    with pytest.raises(settings.SettingsError, match=named.replace(".", r"\.")):
        settings.load(search=False, overrides=[override])


def test_backoff_is_capped_jittered_and_seeded():
    a = Backoff(0.5, 8.0, random.Random(42))
    delays = [a.next() for _ in range(10)]
    ceilings = [min(8.0, 0.5 * 2**i) for i in range(10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays) <= 8.0
    assert len(set(delays)) == 10
    b = Backoff(0.5, 8.0, random.Random(42))
    assert [b.next() for _ in range(10)] == delays  # same seed, same ladder
    a.reset()
    assert a.next() <= 0.5

"""RELIABILITY.md feed and book rows: the live driver against the fake exchange's faults.

Each test runs the real feed, REST client, driver and engine against a fake Binance on
127.0.0.1 replaying ../shared/data, injects one kind of fault (seeded positions), prints
the row's figure and writes it to $TRADEDESK_SCORECARD when set. In every run an order
probe tries to trade whenever a book leaves LIVE: fills on a non-LIVE book must be 0.
"""

from __future__ import annotations

import pytest

from engine.testing.fake_exchange import Scenario
from tests.support.livekit import report, run_live

pytestmark = pytest.mark.timeout(120)

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def common_checks(run) -> dict:
    """What must hold after any fault: every trade the exchange sent applied once, books
    back to the exchange's own book, no crash, nothing filled on a non-LIVE book."""
    s = run.summary()
    for sym in SYMBOLS:
        assert run.engine.symbols[sym].trades == run.fx.stats.trades(sym), sym
        assert s["feed"]["books_reached_live"][sym]
        assert run.book_matches_exchange(sym), f"{sym} book differs from the exchange's after recovery"
    assert s["feed"]["consumer_errors"] == 0
    assert run.driver.fills_on_non_live == 0
    return s


async def test_dropped_connections_reconnect_resubscribe_resync(data_files, tmp_path):
    run = await run_live(data_files, Scenario(window_s=30, drop_every=1200, max_drops=3, lost_on_reconnect=40), tmp_path)
    s = common_checks(run)
    drops = run.fx.stats.drops
    fc = run.driver.feed.counters
    assert drops == 3
    assert fc.reconnects == drops
    assert fc.disconnects.get("lost") == drops
    assert run.fx.stats.lost == 3 * 40  # the market moved on while we were away ...
    for sym in SYMBOLS:
        book = run.engine.symbols[sym].book.counters
        assert book.resyncs == drops  # ... so every reconnect resynced every book
        assert book.snapshots == 1 + drops
        # STALE while down, SYNCING after the reconnect, LIVE once joined: each time (the
        # exchange's final close at the end of the data is one more "feed down").
        states = [(st, why) for s_, st, why in run.probe.states if s_ == sym]
        assert sum(1 for st, why in states if st == "STALE" and why.startswith("feed down")) == drops + 1
        assert sum(1 for st, why in states if st == "SYNCING" and why.startswith("reconnected")) == drops
        assert sum(1 for st, _ in states if st == "LIVE") == 1 + drops
    delays = run.driver.feed.delays
    assert len(delays) == drops + 1
    assert all(0.01 <= d <= 0.3 for d in delays)
    assert run.probe.denied_not_live >= 1  # the probe did try while books were down
    report("feed: connection dropped every k messages", drops_injected=drops, reconnects_survived=fc.reconnects,
           ratio=fc.reconnects / drops, book_resyncs=s["book_resyncs"], stale_book_fills=run.driver.fills_on_non_live,
           orders_denied_not_live=run.probe.denied_not_live)


async def test_clean_close_reconnects(data_files, tmp_path):
    run = await run_live(data_files, Scenario(window_s=30, close_every=1500, max_closes=2), tmp_path)
    common_checks(run)
    fc = run.driver.feed.counters
    assert run.fx.stats.closes == 2
    assert fc.reconnects == 2
    report("feed: clean close (1001 going away)", closes_injected=2, reconnects_survived=fc.reconnects,
           ratio=fc.reconnects / 2)


async def test_planned_reconnect_before_the_24h_cut(data_files, tmp_path):
    run = await run_live(data_files, Scenario(window_s=20, speed=10), tmp_path,
                         "exchange.reconnect_before_s=0.6", "exchange.stale_after_s=1.0")
    common_checks(run)
    fc = run.driver.feed.counters
    assert fc.planned_reconnects >= 2
    assert fc.reconnects == fc.planned_reconnects
    assert fc.disconnects.get("planned") == fc.planned_reconnects
    assert len(run.driver.feed.delays) == 1  # planned ones wait no backoff; only the final close did
    report("feed: 24 h rollover (reconnect_before_s)", planned_reconnects=fc.planned_reconnects,
           reconnects_survived=fc.reconnects, ratio=1.0)


async def test_silence_goes_stale_then_reconnects(data_files, tmp_path):
    stale_after = 0.5
    run = await run_live(data_files, Scenario(window_s=20, speed=10, silence_after=1200), tmp_path,
                         f"exchange.stale_after_s={stale_after}")
    common_checks(run)
    feed = run.driver.feed
    assert run.fx.stats.silences == 1
    assert feed.counters.disconnects.get("stale") == 1
    assert feed.counters.reconnects == 1
    # Detection as the client measured it (silence when noticed) and as the exchange saw
    # it (from its last frame on that connection to the client's disconnect).
    noticed = feed.counters.stale_detections[0]
    end_to_end = feed.disconnect_times[0] - run.fx.stats.silence_started[0]
    bound = stale_after + feed.cfg.check_interval_s  # the threshold plus one watchdog period
    assert stale_after <= noticed <= bound + 0.25  # slack for a loaded CI machine
    assert end_to_end <= bound + 0.3
    for sym in SYMBOLS:
        assert any(st == "STALE" for s_, st, _ in run.probe.states if s_ == sym)
    report("feed: silence with the socket open", stale_after_s=stale_after, bound_s=bound,
           detection_s=round(noticed, 3), detection_end_to_end_s=round(end_to_end, 3))


async def test_missing_pongs_trip_the_keepalive(data_files, tmp_path):
    interval, timeout = 0.2, 0.3
    run = await run_live(data_files, Scenario(window_s=20, speed=10, no_pong_after=1200), tmp_path,
                         f"exchange.ping_interval_s={interval}", f"exchange.ping_timeout_s={timeout}",
                         "exchange.stale_after_s=30")  # so only the keepalive can notice
    common_checks(run)
    feed = run.driver.feed
    assert run.fx.stats.no_pongs == 1
    assert run.fx.stats.pings_ignored >= 1
    assert feed.counters.disconnects.get("keepalive") == 1
    assert feed.counters.reconnects == 1
    detection = feed.disconnect_times[0] - run.fx.stats.silence_started[0]
    bound = interval + timeout  # the last ping before the silence, plus its timeout
    assert detection <= bound + 0.25
    report("feed: no pong", ping_interval_s=interval, ping_timeout_s=timeout, bound_s=bound,
           detection_s=round(detection, 3))


async def test_server_pings_are_answered(data_files, tmp_path):
    run = await run_live(data_files, Scenario(window_s=10, speed=10, ping_interval_s=0.05), tmp_path)
    common_checks(run)
    st = run.fx.stats
    assert st.pings_sent >= 5
    assert st.pongs_received >= st.pings_sent - 1
    assert run.driver.feed.counters.reconnects == 0


async def test_malformed_and_oversized_frames_are_counted_and_skipped(data_files, tmp_path):
    run = await run_live(data_files, Scenario(window_s=30, malformed=6, oversized=1, seed=3), tmp_path)
    s = common_checks(run)
    injected = run.fx.stats.malformed + run.fx.stats.oversized
    rejected = s["parser"]["rejected"]
    assert rejected == {"malformed_json": 1, "binary_frame": 1, "unknown_stream": 1, "bad_schema": 2,
                        "bad_number": 1, "oversized": 1}
    assert run.driver.feed.counters.reconnects == 0  # a 2 MiB frame costs no reconnect
    report("feed: malformed JSON, binary frame, unknown stream, wrong schema, 2 MiB frame",
           injected=injected, handled=s["parser"]["rejected_total"], ratio=s["parser"]["rejected_total"] / injected,
           crashes=s["feed"]["consumer_errors"])


async def test_duplicate_trades_applied_once(data_files, tmp_path):
    run = await run_live(data_files, Scenario(window_s=30, duplicates=5, seed=5), tmp_path)
    s = common_checks(run)
    assert run.fx.stats.duplicates == 5
    assert s["duplicate_trades"] == 5  # seen, and dropped by trade id
    applied = s["trades"] - run.fx.stats.trades()
    assert applied == 0
    report("feed: duplicate trades", injected=5, duplicates_seen=s["duplicate_trades"], duplicates_applied=applied)


async def test_diff_gaps_detected_and_resynced(data_files, tmp_path):
    run = await run_live(data_files, Scenario(window_s=30, gaps=3, seed=11), tmp_path)
    s = common_checks(run)
    assert run.fx.stats.gaps == 3
    assert s["gaps_detected"] == 3
    assert s["book_resyncs"] == 3
    report("book: diff gap", gaps_injected=3, gaps_detected=s["gaps_detected"], ratio=s["gaps_detected"] / 3,
           resyncs=s["book_resyncs"], stale_book_fills=run.driver.fills_on_non_live)


async def test_out_of_order_diffs_detected_and_resynced(data_files, tmp_path):
    run = await run_live(data_files, Scenario(window_s=30, reorders=2, seed=13), tmp_path)
    s = common_checks(run)
    assert run.fx.stats.reorders == 2
    assert s["gaps_detected"] == 2
    assert s["book_resyncs"] == 2
    report("book: out-of-order diffs", reorders_injected=2, detected=s["gaps_detected"], ratio=s["gaps_detected"] / 2)


async def test_stale_snapshot_is_refetched(data_files, tmp_path):
    # 30 s of history: the recorded snapshot the exchange serves once is 30 s behind the stream.
    run = await run_live(data_files, Scenario(window_s=20, history_s=30, stale_snapshots=1), tmp_path)
    s = common_checks(run)
    stale = sum(run.engine.symbols[sym].book.counters.stale_snapshots for sym in SYMBOLS)
    assert run.fx.stats.stale_snapshots == 1
    assert stale == 1
    report("book: stale snapshot", injected=1, detected=stale, ratio=float(stale), resyncs=s["book_resyncs"])


async def test_snapshot_429_waits_retry_after_and_5xx_retries(data_files, tmp_path):
    sc = Scenario(window_s=30, speed=10, depth_429=1, retry_after_s=1, depth_5xx=2)
    run = await run_live(data_files, sc, tmp_path)
    common_checks(run)
    st = run.fx.stats
    assert st.depth_429 == 1
    assert st.depth_5xx == 2
    # From the client's own request log: nothing is sent between receiving the 429 and
    # the end of its Retry-After (a request already in flight is not "sent during").
    log = run.driver.rest.log
    t429 = next(t_done for _, t_done, _, code in log if code == 429)
    during = [path for t_sent, _, path, _ in log if t429 <= t_sent < t429 + sc.retry_after_s]
    after = [t_sent for t_sent, _, _, _ in log if t_sent >= t429]
    assert during == []
    assert after
    assert min(after) - t429 >= sc.retry_after_s
    rest = run.driver.rest.counters
    assert rest["rate_limited"] == 1
    assert rest["server_errors"] == 2
    report("book: snapshot 429/5xx", retry_after_s=sc.retry_after_s, requests_during_retry_after=len(during),
           first_request_after_s=round(min(after) - t429, 3), server_errors_retried=rest["server_errors"])

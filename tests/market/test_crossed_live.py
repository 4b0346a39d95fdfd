"""A crossing diff on the live feed: the fake exchange sends a depth diff with a valid id
chain and a bid above its best ask. The book goes STALE, a REST snapshot is fetched, it
joins the chain and the book is LIVE again, equal to the exchange's; nothing fills on it
meanwhile (issue 12, point 2)."""

from __future__ import annotations

import pytest

from engine.testing.fake_exchange import Scenario
from tests.support.livekit import report, run_live

pytestmark = pytest.mark.timeout(120)

SYMBOLS = ("BTCUSDT", "ETHUSDT")


async def test_crossing_diff_goes_stale_resnapshots_and_comes_back_live(data_files, tmp_path):
    run = await run_live(data_files, Scenario(window_s=30, crossed=2, seed=17), tmp_path)
    s = run.summary()
    assert run.fx.stats.crossed == 2
    assert s["crossed_books"] == 2
    for sym in SYMBOLS:
        c = run.engine.symbols[sym].book.counters
        states = [(st, why) for s_, st, why in run.probe.states if s_ == sym]
        crossings = [why for st, why in states if st == "STALE" and why.startswith("crossed")]
        assert len(crossings) == c.crossed
        assert c.resyncs == c.crossed and c.snapshots == 1 + c.crossed  # one REST resnapshot each
        for i, (_, why) in enumerate(states):  # after each crossing, LIVE again from a fresh snapshot
            if why.startswith("crossed"):
                assert ("LIVE", "synced") in states[i + 1:]
        assert run.book_matches_exchange(sym), f"{sym} book differs from the exchange's after recovery"
    assert run.driver.fills_on_non_live == 0
    assert run.probe.denied_not_live >= 2  # the probe tried on each crossed book and was refused
    assert s["feed"]["consumer_errors"] == 0
    report("book: crossed book on the live feed", crossings_injected=2, detected=s["crossed_books"],
           resyncs=s["book_resyncs"], stale_book_fills=run.driver.fills_on_non_live)


def test_a_venue_whose_own_book_is_crossed_drops_out_of_the_cob_until_it_is_sound():
    from decimal import Decimal as D

    from engine.core.events import BookState
    from engine.market.consolidated import ConsolidatedBook

    cob = ConsolidatedBook("ETHUSDT")
    cob.update("okx", ((D("2500"), D("1")),), ((D("2501"), D("1")),))
    assert cob.merged().venues == ("okx",)
    cob.update("okx", ((D("2502"), D("1")),), ((D("2501"), D("1")),))  # its own bid above its own ask
    m = cob.merged()
    assert m.venues == () and m.left_out == (("okx", "STALE"),) and not m.bids
    vb = cob.pushed("okx")
    assert vb is not None and vb.crossed == 1 and "crossed" in vb.reason
    cob.update("okx", ((D("2500"), D("1")),), ((D("2501"), D("1")),))
    assert cob.venue_states() == {"okx": BookState.LIVE.value}

"""A crossed book is not a book: one depth diff with a valid id chain puts a bid far above
the best ask. The book must go STALE (counted), nothing may decide, fill, close or learn
on it, no fill may ever come from the bad level, and the book must come back LIVE at the
next recorded snapshot, trading again from there (issue 12, point 2)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from engine.core.events import BookState, BookStateChanged, DecisionMade, OrderFilled, PositionClosed
from engine.kernel import replay_session
from tests.conftest import BTC, need_data
from tests.support.recordings import depth_indices, read_lines, snapshot_after, with_bid, write_gz
from tests.support.scorecard import record

BAD_BID = "69000.00000000"  # ~7,000 USDT above the market: a sell there is free money
#: Trades forced: explore often (and never less), short holds, so orders go out every few seconds.
FORCED = ["fusion.explore_rate=0.6", "fusion.explore_decay_trades=0", "fusion.min_hold_s=2",
          "fusion.explore_min_hold_s=2", "fusion.max_hold_s=6", "paper.latency_ms=0"]


def crossed_recording(tmp: Path) -> tuple[Path, int, int]:
    """About 4 minutes of the real BTC sample: the crossing diff at ~1.5 min, a recorded
    snapshot at ~2.5 min. Returns (file, stamp of the crossing diff, stamp of the snapshot)."""
    clean = read_lines(BTC[0], 15_000)
    depth = depth_indices(clean)
    cross_at, snap_after = depth[len(depth) * 3 // 8], depth[len(depth) * 5 // 8]
    snap = snapshot_after(clean, snap_after, "BTCUSDT")  # the exchange's true book: no bad bid
    lines = list(clean)
    lines[cross_at] = with_bid(clean[cross_at], BAD_BID, "5.00000000")
    lines.insert(snap_after + 1, snap)
    path = write_gz(tmp / "btcusdt_20240808.gz", lines)
    return path, int(lines[cross_at].split(b" ")[0]), int(snap.split(b" ")[0])


def test_crossed_book_goes_stale_nothing_trades_on_it_and_it_recovers_at_the_next_snapshot(tmp_path):
    need_data(*BTC)
    path, cross_ts, snap_ts = crossed_recording(tmp_path)
    from tests.support.config import settings_for

    cfg = settings_for(tmp_path / "data", "models.load_checkpoints=false", "models.save_checkpoints=false", *FORCED)
    session = replay_session(cfg, [path], None, mode="backtest")
    engine, brain = session.engine, session.brain
    assert brain is not None
    states: list[tuple[int, BookState, str]] = []
    fills: list[OrderFilled] = []
    decisions: list[int] = []
    closes: list[int] = []
    probes_at: dict[str, tuple[int, int]] = {}

    def on_state(ev: BookStateChanged) -> None:
        states.append((ev.ts, ev.state, ev.reason))
        if brain.probes is not None and ev.state is not BookState.SYNCING:
            probes_at[ev.state.value] = (brain.probes.opened, brain.probes.settled)

    engine.bus.on(BookStateChanged, on_state)
    engine.bus.on(OrderFilled, fills.append)
    engine.bus.on(DecisionMade, lambda ev: decisions.append(ev.ts))
    engine.bus.on(PositionClosed, lambda ev: closes.append(ev.exit_ts))
    session.replay.run_sync()
    s = engine.summary()
    session.close()

    # The crossing diff was caught, counted once, and the book went STALE on it ...
    stale = [(ts, why) for ts, st, why in states if st is BookState.STALE]
    assert len(stale) == 1 and stale[0][0] == cross_ts, states
    assert "crossed" in stale[0][1] and "69000" in stale[0][1]
    assert s["crossed_books"] == 1 and s["book_resyncs"] == 1
    # ... and LIVE again only when the recorded snapshot joined the chain.
    back = [ts for ts, st, _ in states if st is BookState.LIVE and ts > cross_ts]
    assert back and back[0] >= snap_ts
    live_again = back[0]
    assert s["book_state"] == "LIVE"

    # Nothing decided, filled, closed or learned from a probe while the book was not LIVE.
    window = range(cross_ts, live_again)
    assert not [t for t in decisions if t in window]
    assert not [f for f in fills if f.ts in window]
    assert not [t for t in closes if t in window]
    assert brain.counters.not_live_skips > 0
    if "STALE" in probes_at and "LIVE" in probes_at:
        assert probes_at["STALE"] == probes_at["LIVE"]  # no counterfactual opened or settled on it
    # Trading did happen, before and after: the test forces it.
    assert [f for f in fills if f.ts < cross_ts] and [f for f in fills if f.ts >= live_again]
    # No fill ever came from the bad level: every price is a real one from the recording.
    assert all(f.price < Decimal("62500") for f in fills), sorted(f.price for f in fills)[-3:]
    record("book: crossed book (valid id chain)", {
        "crossings_injected": 1, "crossed_books_counted": s["crossed_books"],
        "crossed_books_traded": sum(1 for f in fills if f.ts in window or f.price >= Decimal(BAD_BID)),
        "decisions_on_crossed_book": sum(1 for t in decisions if t in window),
        "recovered_live_at_next_snapshot": int(live_again >= snap_ts)})


@pytest.mark.parametrize("side", ["BUY", "SELL"])
def test_paper_fill_never_crosses_the_opposite_best(cfg, side):
    """Defence in depth: handed a crossed book (whatever produced it), the paper venue
    refuses rather than fill a sell above the ask or a buy below the bid."""
    from engine.core.events import Side
    from engine.execution.executor import OrderRequest, OrderState, OrderType
    from engine.execution.paper_executor import PaperExecutor
    from engine.market.book import SyncedBook

    sb = SyncedBook("ETHUSDT")
    sb.state = BookState.LIVE  # as if a broken book had slipped through
    sb.book.load(((Decimal("2500"), Decimal("1")), (Decimal("2400"), Decimal("1"))),
                 ((Decimal("2450"), Decimal("1")), (Decimal("2460"), Decimal("1"))))
    venue = PaperExecutor(Decimal("0.001"), book_of=lambda sym: sb)
    rep = venue.submit(OrderRequest("c1", "ETHUSDT", Side(side), Decimal("0.5"), OrderType.MARKET), 1)[0]
    assert rep.state is OrderState.REJECTED and not rep.fills
    assert "crossed" in rep.reason

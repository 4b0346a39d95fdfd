"""Book sync by Binance's procedure: buffering, stale diffs, gaps, stale snapshots."""

from __future__ import annotations

from decimal import Decimal as D

from engine.core.events import BookDelta, BookSnapshot, BookState
from engine.market.book import SyncedBook


def delta(first, final, bids=(), asks=()):
    return BookDelta("ETHUSDT", first, final, tuple((D(p), D(q)) for p, q in bids),
                     tuple((D(p), D(q)) for p, q in asks), final, final)


def snapshot(last_id, bids=(("100", "1"), ("99", "2")), asks=(("101", "1"), ("102", "3"))):
    return BookSnapshot("ETHUSDT", last_id, tuple((D(p), D(q)) for p, q in bids),
                        tuple((D(p), D(q)) for p, q in asks), 0)


def make():
    requests = []
    states = []
    book = SyncedBook("ETHUSDT", requests.append, lambda s, st, why: states.append(st))
    return book, requests, states


def test_diffs_before_snapshot_are_buffered_then_applied():
    book, requests, states = make()
    book.on_delta(delta(1, 5, bids=[("98", "1")]))  # older than the snapshot: dropped
    book.on_delta(delta(6, 12, bids=[("100", "5")]))  # straddles lastUpdateId=10
    book.on_delta(delta(13, 14, asks=[("101", "0")]))  # continues the chain
    assert book.state is BookState.SYNCING
    assert requests == ["ETHUSDT"]  # asked for a snapshot once
    book.on_snapshot(snapshot(10))
    assert book.state is BookState.LIVE
    assert states == [BookState.LIVE]
    assert book.last_update_id == 14
    assert book.counters.stale_dropped == 1
    assert book.book.bids[D("100")] == D("5")
    assert book.best_ask() == D("102")  # 101 was deleted by the buffered diff
    assert D("98") not in book.book.bids  # the stale diff was not applied


def test_gap_discards_book_and_requests_resync():
    book, requests, _ = make()
    book.on_delta(delta(9, 11))
    book.on_snapshot(snapshot(10))
    assert book.state is BookState.LIVE
    book.on_delta(delta(12, 13))
    book.on_delta(delta(20, 22))  # gap: 14..19 missing
    assert book.counters.gaps == 1
    assert book.state is BookState.SYNCING
    assert not book.book.bids and not book.book.asks
    assert requests == ["ETHUSDT", "ETHUSDT"]
    assert book.counters.resyncs == 1
    book.on_delta(delta(23, 25))
    book.on_snapshot(snapshot(21))
    assert book.state is BookState.LIVE
    assert book.last_update_id == 25


def test_duplicate_and_reordered_diffs_are_not_applied_twice():
    book, _, _ = make()
    book.on_delta(delta(9, 11, bids=[("100", "7")]))
    book.on_snapshot(snapshot(10))
    book.on_delta(delta(12, 13, bids=[("100", "8")]))
    book.on_delta(delta(12, 13, bids=[("100", "1")]))  # duplicate
    assert book.book.bids[D("100")] == D("8")
    assert book.counters.stale_dropped == 1
    assert book.counters.gaps == 0


def test_snapshot_older_than_buffer_is_refetched():
    book, requests, _ = make()
    book.on_delta(delta(50, 55))
    book.on_snapshot(snapshot(10))  # too old: cannot join diff 50
    assert book.state is BookState.SYNCING
    assert book.counters.stale_snapshots == 1
    assert len(requests) == 2
    book.on_snapshot(snapshot(52))
    assert book.state is BookState.LIVE
    assert book.last_update_id == 55


def test_silence_marks_stale_and_data_resumes_live():
    book, _, states = make()
    book.on_delta(delta(9, 11))
    book.on_snapshot(snapshot(10))
    book.mark_stale("silence")
    assert book.state is BookState.STALE
    book.on_delta(delta(12, 12))
    assert book.state is BookState.LIVE
    assert states == [BookState.LIVE, BookState.STALE, BookState.LIVE]


def test_crossed_book_is_counted_discarded_and_stale_until_a_new_snapshot_joins():
    book, requests, states = make()
    book.on_delta(delta(9, 11))
    book.on_snapshot(snapshot(10))
    assert book.state is BookState.LIVE
    book.on_delta(delta(12, 12, bids=[("101.5", "1")]))  # valid chain, bid above the best ask 101
    assert book.counters.crossed == 1
    assert book.state is BookState.STALE
    assert not book.book.bids and not book.book.asks  # nothing left to trade against
    assert requests == ["ETHUSDT", "ETHUSDT"] and book.counters.resyncs == 1
    # Later diffs of the chain do not bring it back: only a snapshot does.
    book.on_delta(delta(13, 13, bids=[("100", "2")]))
    book.on_delta(delta(14, 15))
    assert book.state is BookState.STALE
    book.on_snapshot(snapshot(13))
    assert book.state is BookState.LIVE
    assert book.last_update_id == 15 and not book.book.is_crossed()
    assert states == [BookState.LIVE, BookState.STALE, BookState.LIVE]


def test_locked_book_counts_as_crossed():
    book, _, _ = make()
    book.on_delta(delta(9, 11))
    book.on_snapshot(snapshot(10))
    book.on_delta(delta(12, 12, asks=[("100", "1")]))  # ask at the best bid: locked
    assert book.counters.crossed == 1 and book.state is BookState.STALE


def test_crossed_snapshot_or_first_diff_never_goes_live():
    book, requests, states = make()
    book.on_delta(delta(9, 11))
    book.on_snapshot(snapshot(10, bids=(("102", "1"),), asks=(("101", "1"),)))
    assert book.state is BookState.STALE and book.counters.crossed == 1
    assert len(requests) == 2  # asked for another one
    book.on_delta(delta(12, 13))
    book.on_delta(delta(14, 14, bids=[("101", "1")]))  # buffered; crosses once applied
    book.on_delta(delta(15, 15))
    book.on_snapshot(snapshot(12))  # joins at 13, then 14 crosses it while draining
    assert book.counters.crossed == 2
    assert book.state is BookState.STALE
    assert states == [BookState.STALE]  # never LIVE in between
    book.on_snapshot(snapshot(14))  # 15 is still buffered: it joins
    assert book.state is BookState.LIVE and book.last_update_id == 15
    assert book.counters.stale_snapshots == 0  # the diffs after a crossing are not mistaken for a stale snapshot


def test_best_prices_follow_deletions():
    book, _, _ = make()
    book.on_delta(delta(9, 11))
    book.on_snapshot(snapshot(10))
    assert book.best_bid() == D("100")
    book.on_delta(delta(12, 12, bids=[("100", "0")]))
    assert book.best_bid() == D("99")
    book.on_delta(delta(13, 13, bids=[("99.5", "1")]))
    assert book.best_bid() == D("99.5")
    assert book.mid() == (D("99.5") + D("101")) / 2

"""The parser on real recorded lines and on bad ones."""

from __future__ import annotations

import gzip
from decimal import Decimal

import pytest

from engine.core.events import BestBidAsk, BookDelta, BookSnapshot, Trade
from engine.market.parse import Parser


def _first_lines(path, n):
    out = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            out.append(line.rstrip(b"\n"))
            if len(out) >= n:
                break
    return out


def test_real_lines_parse_to_every_kind(btc_files):
    p = Parser()
    events = [p.parse_capture_line(line, "BTCUSDT") for line in _first_lines(btc_files[0], 400)]
    kinds = {type(e) for e in events if e is not None}
    assert kinds == {Trade, BookDelta, BestBidAsk, BookSnapshot}
    assert p.stats.rejected_total == 0
    trade = next(e for e in events if isinstance(e, Trade))
    assert trade.symbol == "BTCUSDT"
    assert trade.price == Decimal("61837.63")
    assert trade.trade_id == 3735683259
    assert trade.ts_event == 1723161255342 * 1_000_000  # T in ns
    assert trade.ts_recv == 1723161254087896568
    snap = next(e for e in events if isinstance(e, BookSnapshot))
    assert snap.last_update_id == 50093239218
    assert len(snap.bids) == 1000 and len(snap.asks) == 1000


TRADE = '{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":5,"p":%s,"q":%s,"T":1,"m":false,"M":true}}'


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"123 {not json", "malformed_json"),
        (b"123 ", "malformed_json"),
        (b"no-stamp {}", "bad_line"),
        (b"123 []", "bad_schema"),
        (("1 " + TRADE % ('"NaN"', '"1"')).encode(), "bad_number"),
        (("1 " + TRADE % ('"Infinity"', '"1"')).encode(), "bad_number"),
        (("1 " + TRADE % ('""', '"1"')).encode(), "bad_number"),
        (("1 " + TRADE % ('"-5"', '"1"')).encode(), "bad_number"),
        (("1 " + TRADE % ('"0"', '"1"')).encode(), "bad_number"),
        (("1 " + TRADE % ('"1e400"', '"1"')).encode(), "bad_number"),
        (("1 " + TRADE % ('"100"', '"0"')).encode(), "bad_number"),
        (("1 " + TRADE % ('"100"', "1.5")).encode(), "bad_number"),  # a JSON number, not a string
        (("1 " + TRADE % ("NaN", '"1"')).encode(), "malformed_json"),  # bare NaN is not JSON
        (b'1 {"stream":"ethusdt@kline_1m","data":{}}', "unknown_stream"),
        (b'1 {"stream":"ethusdt@trade","data":{"e":"trade"}}', "bad_schema"),
        (b'1 {"stream":"ethusdt@depth@100ms","data":{"E":1,"U":5,"u":4,"b":[],"a":[]}}', "bad_schema"),
        (b'1 {"stream":"ethusdt@depth@100ms","data":{"E":1,"U":1,"u":4,"b":[["1","x"]],"a":[]}}', "bad_number"),
        (b'1 {"lastUpdateId":5,"bids":[],"asks":[]}', "no_symbol"),
        (b"1 " + b'{"stream":"ethusdt@trade","data":"' + b"x" * (1 << 21) + b'"}', "oversized"),
        (b"9" * 23 + b' {"stream":"ethusdt@trade","data":{}}', "bad_stamp"),  # no int64 holds it
        (b"%d" % (1 << 63) + b' {"stream":"ethusdt@trade","data":{}}', "bad_stamp"),
    ],
)
def test_bad_lines_are_counted_and_skipped(line, reason):
    p = Parser()
    assert p.parse_capture_line(line) is None
    assert p.stats.rejected == {reason: 1}
    # the parser keeps working after a bad line
    good = ("1 " + TRADE % ('"100.5"', '"2"')).encode()
    ev = p.parse_capture_line(good)
    assert isinstance(ev, Trade) and ev.price == Decimal("100.5")


def test_depth_levels_zero_qty_allowed_and_negative_refused():
    p = Parser()
    ok = b'1 {"stream":"ethusdt@depth@100ms","data":{"E":2,"U":1,"u":3,"b":[["10.0","0.00"]],"a":[["11","2"]]}}'
    ev = p.parse_capture_line(ok)
    assert isinstance(ev, BookDelta) and ev.bids == ((Decimal("10.0"), Decimal(0)),)
    bad = b'1 {"stream":"ethusdt@depth@100ms","data":{"E":2,"U":1,"u":3,"b":[["10.0","-1"]],"a":[]}}'
    assert p.parse_capture_line(bad) is None
    assert p.stats.rejected["bad_number"] == 1

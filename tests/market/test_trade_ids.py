"""Trades are applied once by trade id, from a bounded window of recent ids per symbol:
reordered lines are each applied once and never dropped, real duplicates once, and a
number not spelt the exchange's way is refused and counted, its id never remembered, so it
can hide nothing (issue 12, point 3). Recordings are prefixes of the real ETH sample,
edited in a temp folder."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

from engine.execution.ledger import Ledger
from engine.kernel import replay_session
from tests.conftest import ETH, need_data
from tests.support.config import settings_for
from tests.support.recordings import join, read_lines, split, trade_indices, write_gz
from tests.support.scorecard import record

LINES = 12_000  # about three minutes of the ETH sample


def clean() -> list[bytes]:
    need_data(*ETH)
    return read_lines(ETH[0], LINES)


def replay(tmp: Path, lines: list[bytes], name: str) -> dict:
    path = write_gz(tmp / name, lines)
    cfg = settings_for(tmp / "data", "models.enabled=[]")
    session = replay_session(cfg, [path], None, mode="backtest", models=False, ledger=Ledger.memory())
    session.replay.run_sync()
    st = session.engine.symbols["ETHUSDT"]
    bars = st.bars.all_bars("1s")
    out = {"trades": st.trades, "duplicates": st.duplicate_trades, "last_trade_id": st.last_trade_id,
           "volume": sum((b.volume for b in bars), Decimal(0)), "bar_trades": sum(b.trades for b in bars),
           "rejected": dict(session.replay.parser.stats.rejected)}
    session.close()
    return out


def trade_ids(lines: list[bytes]) -> list[int]:
    return [split(lines[i])[1]["data"]["t"] for i in trade_indices(lines)]


def test_reordered_lines_are_each_applied_exactly_once(tmp_path):
    lines = clean()
    ids = trade_ids(lines)
    assert len(ids) == len(set(ids)) > 1500  # the sample has no duplicates of its own
    base = replay(tmp_path, lines, "ethusdt_20240808.gz")
    assert base["trades"] == len(ids) and base["duplicates"] == 0
    # 290 trade lines each moved 1-400 lines earlier (a later trade seen before earlier ones).
    rng = random.Random(12)
    moved = list(lines)
    for i in sorted(rng.sample(trade_indices(lines)[50:], 290)):
        line = moved.pop(i)
        moved.insert(max(0, i - rng.randint(1, 400)), line)
    assert sorted(trade_ids(moved)) == sorted(ids) and trade_ids(moved) != ids
    got = replay(tmp_path, moved, "ethusdt_20240809.gz")
    dropped = base["trades"] - got["trades"]
    assert got["duplicates"] == 0 and dropped == 0  # every line arrived once, every one was applied once
    assert got["bar_trades"] == base["bar_trades"] == len(ids)
    assert got["volume"] == base["volume"]  # the same trades, to the last satoshi of volume
    assert got["last_trade_id"] == max(ids)
    record("feed: reordered trade lines", {"lines_moved": 290, "trades": len(ids),
                                           "real_trades_dropped_as_duplicates": dropped})


def test_true_duplicates_are_applied_once_wherever_the_copy_lands(tmp_path):
    lines = clean()
    ids = trade_ids(lines)
    rng = random.Random(5)
    dup = list(lines)
    picks = sorted(rng.sample(trade_indices(lines)[50:], 60), reverse=True)
    for n, i in enumerate(picks):  # copies land up to 300 lines after, or before, the original
        shift = rng.randint(1, 300) * (1 if n % 2 else -1)
        dup.insert(min(len(dup), max(0, i + shift + (shift > 0))), lines[i])
    got = replay(tmp_path, dup, "ethusdt_20240808.gz")
    assert got["trades"] == len(ids)  # no real trade dropped ...
    assert got["duplicates"] == 60  # ... and every copy seen and not applied
    assert got["bar_trades"] == len(ids)
    record("feed: duplicate trade lines", {"injected": 60, "duplicates_seen": got["duplicates"],
                                           "duplicates_applied": got["bar_trades"] - len(ids),
                                           "real_trades_dropped_as_duplicates": len(ids) - got["trades"]})


BAD_SPELLINGS = ["1E5", " 1", "+1", "1e400", "0x10", "1_000", "1.", ".5", "1.5 ", "١٢"]


def test_numbers_not_spelt_the_exchanges_way_are_refused_and_hide_nothing(tmp_path):
    lines = clean()
    ids = trade_ids(lines)
    first = trade_indices(lines)[10]
    stamp, template = split(lines[first])
    bad: list[bytes] = []
    for k, spelling in enumerate(BAD_SPELLINGS):
        for field in ("p", "q"):
            obj = {"stream": template["stream"], "data": dict(template["data"])}
            obj["data"][field] = spelling
            obj["data"]["t"] = max(ids) + 1000 + 2 * k + (field == "q")  # an id far above every real one
            bad.append(join(stamp, obj))
    # A refused line carrying the id of a real trade that comes later must not hide it.
    later = split(lines[trade_indices(lines)[500]])[1]["data"]
    obj = {"stream": template["stream"], "data": {**later, "p": "1E5"}}
    bad.append(join(stamp, obj))
    edited = lines[:first] + bad + lines[first:]
    got = replay(tmp_path, edited, "ethusdt_20240808.gz")
    assert got["rejected"] == {"bad_number": len(bad)}
    assert got["trades"] == len(ids) and got["duplicates"] == 0
    assert got["last_trade_id"] == max(ids)
    record("numbers: exponent, space, sign, hex, underscore spellings", {
        "injected": len(bad), "rejected": got["rejected"].get("bad_number", 0),
        "real_trades_hidden": len(ids) - got["trades"]})


def test_the_window_is_bounded_and_forgets_oldest_first():
    from engine.market.symbol_state import RecentTradeIds

    w = RecentTradeIds(3)
    assert [w.add(i) for i in (10, 5, 7)] == [True, True, True]
    assert not w.add(5) and not w.add(10)  # duplicates, whatever their order
    assert w.add(11) and len(w) == 3  # 10 forgotten (the oldest arrival) ...
    assert w.add(10)  # ... so it would be applied again: the window is the bound
    assert not w.add(7)


def test_the_parser_takes_only_the_exchanges_spelling():
    from engine.core.events import Trade
    from engine.market.parse import Parser

    def line(p: str, q: str) -> bytes:
        data = {"e": "trade", "E": 1, "s": "ETHUSDT", "t": 5, "p": p, "q": q, "T": 1, "m": False, "M": True}
        return join(1, {"stream": "ethusdt@trade", "data": data}).rstrip(b"\n")

    parser = Parser()
    for good in ("64123.45000000", "0.00010000", "1", "0.5", "100"):
        ev = parser.parse_capture_line(line(good, good))
        assert isinstance(ev, Trade) and ev.price == Decimal(good) == ev.qty
    for bad in BAD_SPELLINGS:
        assert parser.parse_capture_line(line(bad, "1")) is None, bad
        assert parser.parse_capture_line(line("1", bad)) is None, bad
    assert parser.stats.rejected == {"bad_number": 2 * len(BAD_SPELLINGS)}

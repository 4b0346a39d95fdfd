"""Replay of the real recordings: counts, book sync, bars against an independent computation."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal

from models.common.schema import TIMEFRAMES
from tests.conftest import ROOT


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tui.cli", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=300)


def test_replay_btc_cli_summary(btc_files, tmp_path):
    out = tmp_path / "out.json"
    r = run_cli("replay", *btc_files, "--speed", "max", "--headless", "--summary-json", out,
                "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 0, r.stderr
    s = json.loads(out.read_text())
    assert s["trades"] == 19904
    assert s["gaps_detected"] == 0
    assert s["book_resyncs"] == 0
    assert s["crossed_books"] == 0
    assert s["book_state"] == "LIVE"
    assert s["msgs_per_s"] > 0
    assert s["per_symbol"]["BTCUSDT"]["trades"] == 19904
    assert s["per_symbol"]["BTCUSDT"]["book_state"] == "LIVE"
    for key in ("messages", "book_updates", "bars", "decisions", "signals", "fills", "positions_closed",
                "training_steps", "rewards", "realised_pnl", "fees", "wall_s"):
        assert key in s


def independent_bars(paths):
    """Bars straight from the raw trade lines, with the json module and Decimal."""
    bars = defaultdict(dict)  # (sym, tf) -> open_ms -> [o, h, l, c, v, n]
    seen = set()
    for path in paths:
        with gzip.open(path, "rt") as fh:
            for line in fh:
                _, payload = line.split(" ", 1)
                msg = json.loads(payload)
                if not msg.get("stream", "").endswith("@trade"):
                    continue
                d = msg["data"]
                if (d["s"], d["t"]) in seen:
                    continue
                seen.add((d["s"], d["t"]))
                p, q, t = Decimal(d["p"]), Decimal(d["q"]), d["T"]
                for tf, secs in TIMEFRAMES.items():
                    ms = secs * 1000
                    key = t - t % ms
                    b = bars[(d["s"], tf)].get(key)
                    if b is None:
                        bars[(d["s"], tf)][key] = [p, p, p, p, q, 1]
                    else:
                        b[1] = max(b[1], p)
                        b[2] = min(b[2], p)
                        b[3] = p
                        b[4] += q
                        b[5] += 1
    return bars


def test_exported_bars_match_independent_computation(data_files, tmp_path):
    out = tmp_path / "s.json"
    bars_dir = tmp_path / "bars"
    r = run_cli("replay", *data_files, "--speed", "max", "--headless", "--summary-json", out,
                "--export-bars", bars_dir, "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 0, r.stderr
    s = json.loads(out.read_text())
    assert s["trades"] == 34419
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert s["per_symbol"][sym]["gaps_detected"] == 0
        assert s["per_symbol"][sym]["book_state"] == "LIVE"
    expected = independent_bars(data_files)
    assert {tf for (_, tf) in expected} == set(TIMEFRAMES)
    for (sym, tf), rows in expected.items():
        path = bars_dir / f"{sym.lower()}_{tf}.csv"
        with path.open() as fh:
            got = list(csv.DictReader(fh))
        assert [int(g["open_time_ms"]) for g in got] == sorted(rows), (sym, tf)
        for g in got:
            o, h, lo, c, v, n = rows[int(g["open_time_ms"])]
            assert (Decimal(g["open"]), Decimal(g["high"]), Decimal(g["low"]), Decimal(g["close"])) == (o, h, lo, c)
            assert Decimal(g["volume"]) == v
            assert int(g["trades"]) == n


def test_replay_is_deterministic_in_process(btc_files, cfg):
    from engine.kernel import replay_session

    results = []
    for _ in range(2):
        session = replay_session(cfg, btc_files, None)
        engine, replay = session.engine, session.replay
        replay.run_sync()
        st = engine.symbols["BTCUSDT"]
        results.append((st.trades, st.book.last_update_id, st.book.best_bid(), st.book.best_ask(),
                        list(st.bars.all_bars("1m"))))
    assert results[0] == results[1]


def test_missing_recording_is_a_clear_error(tmp_path):
    r = run_cli("replay", tmp_path / "nope.gz", "--headless", "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 2
    assert "no such recording" in r.stderr


def test_bad_speed_is_refused(btc_files, tmp_path):
    r = run_cli("replay", btc_files[0], "--headless", "--speed", "fast", "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 2
    assert "--speed" in r.stderr


def test_damaged_recording_lines_are_skipped(tmp_path):
    good = (b'1 {"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":1,"p":"100","q":"1",'
            b'"T":1000,"m":false,"M":true}}\n')
    path = tmp_path / "mixed.txt"
    path.write_bytes(good + b"123 {broken\n" + good.replace(b'"t":1', b'"t":2'))
    out = tmp_path / "s.json"
    r = run_cli("replay", path, "--headless", "--speed", "max", "--summary-json", out,
                "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 0, r.stderr
    s = json.loads(out.read_text())
    assert s["trades"] == 2
    assert s["parser"]["rejected"] == {"malformed_json": 1}


def test_truncated_gzip_keeps_what_was_read(btc_files, tmp_path):
    cut = tmp_path / "btcusdt_20240808.gz"
    cut.write_bytes(btc_files[0].read_bytes()[:200_000])  # a recorder killed mid-write
    out = tmp_path / "s.json"
    r = run_cli("replay", cut, "--headless", "--speed", "max", "--summary-json", out,
                "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 0, r.stderr
    s = json.loads(out.read_text())
    assert s["reader"]["truncated_files"] == 1
    assert 0 < s["trades"] < 9757



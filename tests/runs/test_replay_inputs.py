"""What `tradedesk replay` / `backtest` are handed (issue 12, point 7): files that are no
recording are refused with exit 2 naming the file and why; a recording cut short replays
what it holds, with a warning; a recording without the primary symbol says which symbol
the session trades; old run ledgers are pruned to `general.keep_run_ledgers`."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.settings import SettingsError
from engine.execution.ledger import Ledger
from engine.kernel import replay_session
from engine.market.capture import CaptureError
from tests.conftest import BTC, ROOT, need_data
from tests.support.config import settings_for
from tests.support.recordings import read_lines, write_gz

TRADE = (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":%d,"p":"61000.5","q":"0.1",'
         b'"T":%d,"m":false,"M":true}}')


def tiny_recording(path: Path, n: int = 20) -> Path:
    """A few BTC trades, plain text (fast to replay)."""
    lines = [b"%d " % (1_723_161_600_000_000_000 + i * 1_000_000) + TRADE % (i + 1, 1_723_161_600_000 + i) + b"\n"
             for i in range(n)]
    path.write_bytes(b"".join(lines))
    return path


def not_recordings(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the refusal must say)."""
    rng = random.Random(3)
    text = tiny_recording(tmp / "plain.txt").read_bytes()
    files = {
        "empty .gz": ("empty.gz", b"", "empty file"),
        "random bytes .gz": ("random.gz", rng.randbytes(4096), "not gzip"),
        "random bytes": ("random.bin", rng.randbytes(4096), "no valid"),
        "bz2 named .gz": ("btcusdt_20240808.gz", bz2.compress(text), "bzip2"),
        "empty gzip": ("nothing.gz", gzip.compress(b""), "holds nothing"),
        "gzip of text": ("notes.gz", gzip.compress(b"hello\nworld\n"), "no valid"),
        "gzip cut in its header": ("cut.gz", gzip.compress(text)[:12], "damaged gzip"),
    }
    out = {}
    for name, (fname, data, why) in files.items():
        folder = tmp / name.replace(" ", "_").replace(".", "")
        folder.mkdir()
        (folder / fname).write_bytes(data)
        out[name] = (folder / fname, why)
    return out


def test_files_that_are_no_recording_are_refused_naming_the_file_and_why(tmp_path):
    from engine.market.capture import check_recording

    cases = not_recordings(tmp_path)
    for name, (path, why) in cases.items():
        with pytest.raises(CaptureError) as err:
            check_recording(path)
        assert str(path) in str(err.value) and why in str(err.value), name
        # The kernel refuses before it creates anything (no run ledger is left behind).
        cfg = settings_for(tmp_path / "data", "models.enabled=[]")
        with pytest.raises(CaptureError):
            replay_session(cfg, [path], None)
    assert not (tmp_path / "data" / "ledger").exists()


def run_cli(*args: object, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tui.cli", *map(str, args), "--set", f'general.data_dir="{data_dir}"',
                           "--set", "models.enabled=[]"], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["replay", "backtest"])
def test_the_command_exits_2_with_one_line_and_no_traceback(tmp_path, command):
    bad = tmp_path / "btcusdt_20240808.gz"
    bad.write_bytes(bz2.compress(tiny_recording(tmp_path / "t.txt").read_bytes()))
    extra = ["--headless", "--speed", "max"] if command == "replay" else []
    r = run_cli(command, bad, *extra, data_dir=tmp_path / "data")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"tradedesk: {bad}: bzip2 data, not a recording; recordings are plain text or gzip " \
                               "(decompress it, or recompress it with gzip)"
    assert "done:" not in r.stderr and "Traceback" not in r.stderr


def test_a_recording_cut_short_replays_what_it_holds_with_a_warning(tmp_path, caplog):
    need_data(*BTC)
    cut = tmp_path / "btcusdt_20240808.gz"
    cut.write_bytes(BTC[0].read_bytes()[:120_000])  # a recorder killed mid-write
    cfg = settings_for(tmp_path / "data", "models.enabled=[]", 'symbols.primary="BTC/USDT"')
    session = replay_session(cfg, [cut], None, models=False, ledger=Ledger.memory())
    with caplog.at_level(logging.WARNING):
        session.replay.run_sync()
    trades = session.engine.symbols["BTCUSDT"].trades
    session.close()
    assert 0 < trades < 9757
    assert session.replay.counters["truncated_files"] == 1
    assert any(str(cut) in r.getMessage() and "cut short" in r.getMessage() for r in caplog.records)


def test_a_file_of_stamped_json_without_market_data_says_so(tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_bytes(b"".join(b'%d {"hello":"world"}\n' % (1_000 + i) for i in range(5)))
    session = replay_session(settings_for(tmp_path / "data", "models.enabled=[]"), [odd], None, models=False,
                             ledger=Ledger.memory())
    session.replay.run_sync()
    session.close()
    assert session.replay.warnings == [f"no market data in {odd}: 5 lines read, none of them a trade, depth or "
                                       "ticker message"]


def test_a_recording_without_the_primary_symbol_says_which_symbol_is_traded(tmp_path):
    rec = tiny_recording(tmp_path / "session.txt")  # BTC only; the default primary is ETH/USDT
    out = tmp_path / "s.json"
    r = run_cli("replay", rec, "--headless", "--speed", "max", "--summary-json", out, data_dir=tmp_path / "data")
    assert r.returncode == 0, r.stderr
    line = "symbols.primary is ETH/USDT but session.txt holds only BTC/USDT: this session trades BTC/USDT"
    assert line in r.stderr
    s = json.loads(out.read_text())
    assert s["warnings"] == [line] and s["per_symbol"]["BTCUSDT"]["trades"] == 20
    # With the primary in the data, nothing to say; the desk's log pane gets the same line.
    cfg = settings_for(tmp_path / "d2", "models.enabled=[]")
    session = replay_session(cfg, [rec], None, models=False, ledger=Ledger.memory())
    assert [ln.text for ln in session.engine.log if ln.source == "replay"] == [line]
    session.close()
    cfg = settings_for(tmp_path / "d3", "models.enabled=[]", 'symbols.primary="BTC/USDT"')
    session = replay_session(cfg, [rec], None, models=False, ledger=Ledger.memory())
    assert session.replay.warnings == []
    session.close()


def old_run_ledger(runs: Path, name: str, mtime: float, wal: bool = True) -> Path:
    db = runs / f"{name}.db"
    Ledger(db, "replay", durable=False).close()
    if wal:  # as a run killed before its close leaves them
        db.with_name(db.name + "-wal").write_bytes(b"x")
        db.with_name(db.name + "-shm").write_bytes(b"x")
    os.utime(db, (mtime, mtime))
    return db


def test_old_run_ledgers_are_pruned_to_the_newest_n_never_one_in_use(tmp_path):
    data = tmp_path / "data"
    runs = data / "ledger" / "runs"
    runs.mkdir(parents=True)
    paper = Ledger(data / "ledger" / "paper.db", "paper")  # the paper account: never touched
    paper.close()
    in_use = Ledger(old_run_ledger(runs, "replay-20200101T000000Z-1", 1000), "replay", durable=False)  # the oldest
    old = [old_run_ledger(runs, f"replay-2020010{i}T000000Z-1", 1000 + 1000 * i) for i in (2, 3, 4, 5)]
    rec = tiny_recording(tmp_path / "session.txt")
    cfg = settings_for(data, "models.enabled=[]", 'symbols.primary="BTC/USDT"', "general.keep_run_ledgers=2")
    session = replay_session(cfg, [rec], None, models=False)
    session.replay.run_sync()
    own = session.engine.ledger.path
    session.close()
    left = sorted(p.name for p in runs.iterdir())
    # kept: this run and the newest old one (2 finished), plus the one still in use
    assert left == sorted([
        in_use.path.name, in_use.path.name + ".lock", in_use.path.name + "-wal", in_use.path.name + "-shm",
        old[-1].name, old[-1].name + ".lock", old[-1].name + "-wal", old[-1].name + "-shm",
        own.name, own.name + ".lock"])
    in_use.close()
    assert (data / "ledger" / "paper.db").is_file()
    # 0: a replay leaves no ledger behind (the one no longer in use goes too).
    cfg0 = cfg.with_overrides(["general.keep_run_ledgers=0"])
    session = replay_session(cfg0, [rec], None, models=False)
    session.replay.run_sync()
    session.close()
    assert list(runs.iterdir()) == []
    assert (data / "ledger" / "paper.db").is_file()


def test_keep_run_ledgers_is_validated(tmp_path):
    assert settings_for(tmp_path).general.keep_run_ledgers == 20
    assert settings_for(tmp_path, "general.keep_run_ledgers=0").general.keep_run_ledgers == 0
    with pytest.raises(SettingsError, match=r"general\.keep_run_ledgers = .*expected an integer in \[0, 100000\]"):
        settings_for(tmp_path, "general.keep_run_ledgers=-1")
    with pytest.raises(SettingsError, match=r"general\.keep_run_ledgers = .*expected an integer in \[0, 100000\]"):
        settings_for(tmp_path, "general.keep_run_ledgers=2.5")


def test_a_prefix_of_a_real_recording_still_passes_the_check(tmp_path):
    from engine.market.capture import check_recording

    need_data(*BTC)
    rec = write_gz(tmp_path / "btcusdt_20240808.gz", read_lines(BTC[0], 500))
    info = check_recording(rec)
    assert info.symbols == {"BTCUSDT"} and info.first_symbol == "BTCUSDT"

"""Offline pre-training on Binance public-data dumps (kline CSV, zipped or not)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def write_klines(path, minutes, step_min, seed, header=False):
    """A Binance kline CSV with swings of a few percent (written by hand for the test)."""
    rng = random.Random(seed)
    t0 = 1_722_470_400_000  # 2024-08-01 00:00 UTC, ms
    rows = []
    price = 3000.0
    for i in range(0, minutes, step_min):
        drift = 0.03 * math.sin(i / 97.0) + 0.01 * math.sin(i / 23.0)
        o = price
        c = 3000.0 * (1 + drift) * (1 + rng.gauss(0, 0.0005))
        h, lo = max(o, c) * 1.0005, min(o, c) * 0.9995
        v = rng.uniform(10, 50)
        open_ms = t0 + i * 60_000
        rows.append([open_ms, f"{o:.2f}", f"{h:.2f}", f"{lo:.2f}", f"{c:.2f}", f"{v:.4f}",
                     open_ms + step_min * 60_000 - 1, f"{v * c:.2f}", rng.randint(50, 500),
                     f"{v * 0.5:.4f}", f"{v * 0.5 * c:.2f}", "0"])
        price = c
    text = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
            "taker_buy_quote_volume,ignore\n" if header else "")
    text += "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(path.stem + ".csv", text)
    else:
        path.write_text(text)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tui.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_train_on_kline_dumps_saves_a_checkpoint_models_lists(tmp_path):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    write_klines(dumps / "ETHUSDT-1m-2024-08.zip", 3000, 1, 1)
    write_klines(dumps / "ETHUSDT-5m-2024-08.csv", 3000, 5, 2, header=True)
    data = tmp_path / "data"
    r = run_cli("train", dumps, "--epochs", "2", "--set", f'general.data_dir="{data}"')
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)["dumps"]
    assert rep["samples"] > 20
    assert rep["labels"]["ETHUSDT 1m"] > 5 and rep["labels"]["ETHUSDT 5m"] > 2
    assert rep["steps"] > 0 and math.isfinite(rep["last_loss"])
    assert "train CNN [" in r.stderr  # the progress bar
    val = rep["validation"]  # held out by time: accuracy beside the commonest label, and a bar run
    assert val["labels"] > 0 and 0 <= val["accuracy"] <= 1 and 0 < val["commonest_label_accuracy"] <= 1
    run = val["bar_run"]
    assert run["bars"] > 100 and set(run["baselines"]) == {"flat", "buy_and_hold", "random"}
    assert rep["trained_on"] + rep["held_out"] == rep["samples"]
    assert (data / "checkpoints" / "cnn-small.pt").is_file()
    r = run_cli("models", "--set", f'general.data_dir="{data}"')
    assert r.returncode == 0
    assert "cnn" in r.stdout and "small" in r.stdout and str(rep["steps"]) in r.stdout
    # a second run continues from the checkpoint
    r2 = run_cli("train", dumps / "ETHUSDT-1m-2024-08.zip", "--epochs", "1", "--set", f'general.data_dir="{data}"')
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert json.loads(r2.stdout)["dumps"]["steps"] > rep["steps"]
    # both files damaged: it says so, trains a fresh model and keeps the damaged file aside
    ckpts = data / "checkpoints"
    for name in ("cnn-small.pt", "cnn-small.prev.pt"):
        (ckpts / name).write_bytes(b"not a checkpoint")
    r3 = run_cli("train", dumps / "ETHUSDT-1m-2024-08.zip", "--epochs", "1", "--set", f'general.data_dir="{data}"')
    assert r3.returncode == 0, r3.stderr[-2000:]
    rep3 = json.loads(r3.stdout)["dumps"]
    assert "cnn-small.pt" in rep3["refused_checkpoint"] and "cnn-small.pt" in r3.stderr
    assert "training a fresh CNN" in r3.stderr and "Traceback" not in r3.stderr
    assert 0 < rep3["steps"] < rep["steps"]  # one epoch from scratch
    assert [p.read_bytes() for p in (ckpts / "quarantine").glob("cnn-small*.pt")] == [b"not a checkpoint"]


def test_train_refuses_bad_rows_and_flat_data(tmp_path):
    bad = tmp_path / "ETHUSDT-1m-2024-08.csv"
    bad.write_text("1722470400000,NaN,1,1,1,1,1,1,1,1,1,0\n")
    r = run_cli("train", bad, "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 2 and "row 1" in r.stderr
    flat = tmp_path / "BTCUSDT-1h-2024-08.csv"
    flat.write_text("".join(f"{1722470400000 + i * 3600000},100,100,100,100,1,0,100,1,0.5,50,0\n" for i in range(200)))
    r = run_cli("train", flat, "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 2 and "no confirmed swings" in r.stderr
    short = tmp_path / "SOLUSDT-1m-2024-08.csv"
    short.write_text("".join(f"{1722470400000 + i * 60000},{100 + i},{101 + i},{99 + i},{100 + i},1,0,100,1,0.5,50,0\n"
                             for i in range(8)))
    r = run_cli("train", short, "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 2 and "too little history" in r.stderr and "8 bars" in r.stderr


def test_train_on_the_sample_recordings_trains_all_three_and_backtest_loads_them(data_files, tmp_path):
    """The learning loop over the recording, validated on its last fifth; a following
    `backtest --from-checkpoints` starts from the models it wrote."""
    data = tmp_path / "data"
    r = run_cli("train", *data_files, "--set", f'general.data_dir="{data}"')
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)["recordings"]
    assert rep["held_out_s"] > 100 and rep["trained_on_s"] > 4 * 100
    steps = rep["training_steps"]
    assert all(steps[k] > 0 for k in ("cnn", "dqn", "cob")), steps
    val = rep["validation"]
    for arm in ("learned", "untrained"):
        assert {"net_pnl", "trades", "realised_pnl", "fees"} <= set(val[arm])
    assert set(val["baselines"]) == {"flat", "buy_and_hold", "random"} and "rank_vs_random" in val["verdict"]
    assert "train: learning loop [" in r.stderr
    assert sorted(p.name for p in (data / "checkpoints").glob("*-small.pt")) == ["cnn-small.pt", "cob-small.pt",
                                                                                 "dqn-small.pt"]
    bt = tmp_path / "bt.json"
    r = run_cli("backtest", data_files[0], "--from-checkpoints", "--report", bt, "--set", f'general.data_dir="{data}"')
    assert r.returncode == 0, r.stderr[-3000:]
    training = json.loads(bt.read_text())["training"]
    # It says what it started from: the files train wrote, at the step counts train reached.
    assert training["loaded"] == {k: {"file": f"{k}-small.pt", "steps": steps[k]} for k in ("cnn", "cob", "dqn")}
    assert "started from checkpoints: CNN step " in r.stdout
    after = training["steps"]
    assert all(after[k] > steps[k] for k in steps), (steps, after)  # it started from the trained models


def test_train_says_how_much_a_recording_needs(tmp_path):
    rec = tmp_path / "ethusdt_20240101.txt"
    rec.write_text('1 {"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":1,"p":"1.00000000",'
                   '"q":"1.00000000","T":1,"m":true,"M":true}}\n'
                   '60000000000 {"stream":"ethusdt@trade","data":{"e":"trade","E":60000,"s":"ETHUSDT","t":2,'
                   '"p":"1.00000000","q":"1.00000000","T":60000,"m":true,"M":true}}\n')
    r = run_cli("train", rec, "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 2 and "60 s of market time" in r.stderr and "at least 300 s" in r.stderr

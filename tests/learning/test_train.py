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
    rep = json.loads(r.stdout)
    assert rep["samples"] > 20
    assert rep["labels"]["ETHUSDT 1m"] > 5 and rep["labels"]["ETHUSDT 5m"] > 2
    assert rep["steps"] > 0 and math.isfinite(rep["last_loss"])
    assert "train CNN [" in r.stderr  # the progress bar
    assert (data / "checkpoints" / "cnn-small.pt").is_file()
    r = run_cli("models", "--set", f'general.data_dir="{data}"')
    assert r.returncode == 0
    assert "cnn" in r.stdout and "small" in r.stdout and str(rep["steps"]) in r.stdout
    # a second run continues from the checkpoint
    r2 = run_cli("train", dumps / "ETHUSDT-1m-2024-08.zip", "--epochs", "1", "--set", f'general.data_dir="{data}"')
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert json.loads(r2.stdout)["steps"] > rep["steps"]


def test_train_refuses_bad_rows_and_flat_data(tmp_path):
    bad = tmp_path / "ETHUSDT-1m-2024-08.csv"
    bad.write_text("1722470400000,NaN,1,1,1,1,1,1,1,1,1,0\n")
    r = run_cli("train", bad, "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 2 and "row 1" in r.stderr
    flat = tmp_path / "BTCUSDT-1h-2024-08.csv"
    flat.write_text("".join(f"{1722470400000 + i * 3600000},100,100,100,100,1,0,100,1,0.5,50,0\n" for i in range(200)))
    r = run_cli("train", flat, "--set", f'general.data_dir="{tmp_path}"')
    assert r.returncode == 2 and "no confirmed swings" in r.stderr

"""Inputs that used to crash a command: each now gets one line naming what was wrong and
exit 2 (or, for a bad line in a recording, is counted and skipped), never a traceback;
a log that cannot be written costs one line, not a traceback per record; a secret passed
on the command line is refused without being echoed."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core import settings
from engine.core.settings import SettingsError
from tests.conftest import ROOT
from tui.cli import QuietFileHandler

CANARY = "td-canary-KEY-4f1d2c9e"  # a value that must never come back


def run_cli(*args: object, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tui.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def one_line_refusal(r: subprocess.CompletedProcess[str], *named: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for word in named:
        assert word in lines[0], lines[0]
    return lines[0]


def test_config_that_is_a_directory_is_refused_naming_it(tmp_path):
    one_line_refusal(run_cli("--config", tmp_path, "models"), str(tmp_path), "is a directory")


def test_config_that_is_a_device_is_refused_without_reading_it():
    one_line_refusal(run_cli("--config", "/dev/zero", "models"), "/dev/zero", "not a regular file")


def test_config_larger_than_a_settings_file_is_refused(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (settings.MAX_CONFIG_BYTES + 1))
    one_line_refusal(run_cli("--config", big, "models"), str(big), "larger than")


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_data_dir_on_a_file_is_refused_naming_the_key(tmp_path, where):
    f = tmp_path / "afile"
    f.write_text("x")
    target = f if where == "file" else f / "deeper" / "data"
    one_line_refusal(run_cli("--set", f'general.data_dir="{target}"', "models"), "general.data_dir", "is a file")


def test_an_empty_data_dir_is_refused_and_nothing_lands_in_the_current_folder(tmp_path):
    one_line_refusal(run_cli("--set", 'general.data_dir=""', "models", cwd=tmp_path), "general.data_dir", "empty")
    assert list(tmp_path.iterdir()) == []


def test_log_file_that_cannot_be_opened_is_refused_naming_it(tmp_path):
    one_line_refusal(run_cli("--set", f'general.data_dir="{tmp_path / "d"}"', "--log-file", tmp_path, "models"),
                     "log file", str(tmp_path))


def test_a_secret_on_the_command_line_is_refused_without_echo_and_points_at_the_environment(tmp_path):
    for arg in (f"live.api_key={CANARY}", f"live.api_secret={CANARY}", f"live.{CANARY}", CANARY):
        r = run_cli("--set", f'general.data_dir="{tmp_path}"', "--set", arg, "models")
        assert CANARY not in r.stdout + r.stderr, (arg, r.stderr)
        line = one_line_refusal(r)
        if arg.startswith("live.api_"):
            assert "TRADEDESK_API_KEY" in line and "not shown" in line, line
    with pytest.raises(SettingsError) as err:
        settings.load(search=False, overrides=[f"live.api_key={CANARY}"])
    assert CANARY not in str(err.value)


def test_a_huge_receive_stamp_is_counted_and_skipped_and_the_replay_carries_on(tmp_path):
    lines = [
        '1000000000 {"stream":"ethusdt@trade","data":{"e":"trade","E":1000,"s":"ETHUSDT","t":1,"p":"2500.00",'
        '"q":"0.1000","T":1000,"m":true,"M":true}}',
        '12345678901234567890123 {"stream":"ethusdt@trade","data":{"e":"trade","E":1500,"s":"ETHUSDT","t":2,'
        '"p":"2500.10","q":"0.1000","T":1500,"m":false,"M":true}}',
        '9223372036854775808 {"stream":"ethusdt@trade","data":{"e":"trade","E":1600,"s":"ETHUSDT","t":3,'
        '"p":"2500.10","q":"0.1000","T":1600,"m":false,"M":true}}',
        '2000000000 {"stream":"ethusdt@trade","data":{"e":"trade","E":2000,"s":"ETHUSDT","t":4,"p":"2500.20",'
        '"q":"0.1000","T":2000,"m":false,"M":true}}',
    ]
    rec = tmp_path / "ethusdt_20240101.gz"
    with gzip.open(rec, "wt") as f:
        f.write("\n".join(lines) + "\n")
    out = tmp_path / "s.json"
    r = run_cli("--no-load-models", "--set", f'general.data_dir="{tmp_path / "d"}"', "replay", rec, "--speed", "max",
                "--headless", "--summary-json", out)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["reader"]["bad_stamp"] == 2 and summary["trades"] == 2, summary["reader"]


def test_a_log_that_cannot_be_written_costs_one_line_not_a_traceback_per_record(tmp_path, capsys):
    handler = QuietFileHandler(tmp_path / "x.log", encoding="utf-8")

    class Full:
        def write(self, _text: str) -> int:
            raise OSError(28, "No space left on device")

        def flush(self) -> None:
            raise OSError(28, "No space left on device")

    handler.stream = Full()  # type: ignore[assignment]
    log = logging.getLogger("tradedesk.test.full")
    log.propagate = False
    log.addHandler(handler)
    try:
        for i in range(8):
            log.warning("record %d", i)
    finally:
        log.removeHandler(handler)
    err = capsys.readouterr().err
    assert err.count("cannot write the log") == 1 and "Logging error" not in err and "Traceback" not in err, err

"""Refused checkpoints: every field checked, the refusal naming the file and the field, the
fall back to ``.prev.pt``, the refused file quarantined (never rotated over the good backup),
the checksum, ``tradedesk models`` giving loading's verdict, and failed saves reported."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.core import failpoints
from engine.learning.host import ModelHost, ModelStore, checkpoint_verdicts
from models.cnn.cnn_agent import CNNAgent
from models.cob.cob_agent import COBAgent
from models.common import checkpoint as ckpt
from models.common.base_agent import Agent
from models.common.schema import BUY
from models.dqn.dqn_agent import DQNAgent
from tests.conftest import ROOT
from tests.models.test_models_checkpoint import Payload, trained
from tests.models.test_models_nets import random_inputs
from tests.support.checkpoint_worker import flip_a_bit
from tests.support.config import settings_for
from tests.support.scorecard import record


@pytest.fixture(autouse=True)
def _no_failpoints() -> Iterator[None]:
    yield
    failpoints.disarm()
    ckpt.set_failpoint(None)


def forge(path: Path, mutate: Callable[[dict[str, Any]], None]) -> None:
    """Edit a checkpoint and write it back with a checksum that matches the edit, so that
    the field check (not the checksum) is what has to refuse it."""
    data = torch.load(path, weights_only=True)
    mutate(data)
    data["checksum"] = {"algorithm": "sha256", "digest": ckpt.payload_digest(data)}
    torch.save(data, path)


def _first(table: dict[str, Any]) -> str:
    return next(iter(table))


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return mutate


def _bad_target(d: dict[str, Any]) -> None:
    d["extra"]["target"][_first(d["extra"]["target"])] = torch.zeros(3, 3)


def _pickle(path: Path) -> None:
    data = torch.load(path, weights_only=True)
    data["metrics"] = {"x": Payload(path.parent / "pwned")}
    torch.save(data, path)


def _buffer_rows(name: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        d["extra"]["buffer"][name] = d["extra"]["buffer"][name][:, :1]  # a row of the wrong shape
    return mutate


# case -> (agent, how the current file is spoiled, what the refusal must name)
CASES: dict[str, tuple[type[Agent], Callable[[Path], None], str]] = {
    "unparsable int": (DQNAgent, lambda p: forge(p, _set("counters", "training_steps", value="lots")),
                       "counters.training_steps"),
    "inf": (DQNAgent, lambda p: forge(p, _set("counters", "training_steps", value=math.inf)),
            "counters.training_steps"),
    "wrong-shape target net": (DQNAgent, lambda p: forge(p, _bad_target), "extra.target"),
    "code-carrying pickle": (DQNAgent, _pickle, "io.open"),
    "another preset's label": (DQNAgent, lambda p: forge(p, _set("preset", value="large")), "field preset"),
    "future format": (DQNAgent, lambda p: forge(p, _set("format_version", value=ckpt.FORMAT_VERSION + 1)),
                      "format_version"),
    "bit flip": (DQNAgent, flip_a_bit, "checksum"),
    "replay of the wrong width": (DQNAgent, lambda p: forge(p, lambda d: d["extra"]["replay"].__setitem__(
        "states", torch.zeros(4, 7))), "extra.replay.states"),
    "CNN outcome buffer shape": (CNNAgent, lambda p: forge(p, _buffer_rows("bars")), "extra.buffer.bars"),
    "COB outcome buffer shape": (COBAgent, lambda p: forge(p, _buffer_rows("rewards")), "extra.buffer.rewards"),
    "optimizer moments": (COBAgent, lambda p: forge(p, lambda d: d["extra"]["optimizer"]["state"][0].__setitem__(
        "exp_avg", torch.zeros(2))), "extra.optimizer.state.0.exp_avg"),
    "track record": (COBAgent, lambda p: forge(p, _set("extra", "track_record", value=[0.01, math.nan])),
                     "extra.track_record"),
    "generator state": (CNNAgent, lambda p: forge(p, _set("extra", "buffer_rng", value={"bit_generator": "PCG64"})),
                        "extra.buffer_rng"),
}


def weights(agent: Agent) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in agent.learner.state_dict().items()}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_checkpoint_falls_back_and_the_good_previous_is_kept(tmp_path: Path, case: str) -> None:
    cls, spoil, field = CASES[case]
    folder = tmp_path / "data" / "checkpoints"
    a = trained(cls)
    path = folder / f"{a.kind}-small.pt"
    a.save(path)
    good = weights(a)  # what .prev.pt will hold
    a.train_on_reward(random_inputs(7), BUY, 0.4)
    a.save(path)
    prev = ckpt.previous_path(path)
    good_bytes = prev.read_bytes()
    spoil(path)
    bad_bytes = path.read_bytes()

    b = cls(seed=9)
    info = b.load(path)
    assert info["fallback"] and info["path"] == str(prev), info
    why = info["refused"][0]
    assert why.startswith(f"{path}: ") and field in why, why  # names the file and the field
    assert all(torch.equal(v, b.learner.state_dict()[k]) for k, v in good.items())
    assert not (path.parent / "pwned").exists()

    # tradedesk models gives the same verdict, file by file
    rows = {Path(r["path"]).name: r for r in checkpoint_verdicts(settings_for(tmp_path / "data"), folder)}
    assert f"{path}: {rows[path.name].get('error')}" == why
    assert "error" not in rows[prev.name]

    # the next save keeps the good backup; the refused file goes to quarantine with its reason
    b.train_on_reward(random_inputs(8), BUY, 0.2)
    b.save(path)
    assert prev.read_bytes() == good_bytes
    cls(seed=1).load(path, fallback=False)  # the new file is good
    held = ckpt.quarantined(folder)
    assert len(held) == 1 and held[0].read_bytes() == bad_bytes
    assert why.split(": ", 1)[1] in held[0].with_suffix(".reason").read_text()
    # and the save after that rotates the good new file in as the backup
    b.save(path)
    cls(seed=2).load(prev, fallback=False)
    assert len(ckpt.quarantined(folder)) == 1
    record(f"models: refused checkpoint ({case})", {"fell back to .prev.pt": 1, "good checkpoints lost": 0})


def test_checksum_is_written_and_covers_every_field(tmp_path: Path) -> None:
    a = trained(COBAgent)
    path = a.save(tmp_path / "cob.pt")
    data = torch.load(path, weights_only=True)
    assert data["format_version"] == ckpt.FORMAT_VERSION
    assert data["checksum"] == {"algorithm": "sha256", "digest": ckpt.payload_digest(data)}
    # an edit of a plain value without a new checksum is refused too
    data["counters"]["training_steps"] += 1
    torch.save(data, tmp_path / "edited.pt")
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        ckpt.read_checkpoint(tmp_path / "edited.pt")
    # a format 1 file (written before checksums) still loads
    old = torch.load(path, weights_only=True)
    old.pop("checksum")
    old["format_version"] = 1
    torch.save(old, tmp_path / "v1.pt")
    COBAgent(seed=3).load(tmp_path / "v1.pt", fallback=False)


def test_models_command_reports_the_refusal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    a = trained(DQNAgent)
    path = data / "checkpoints" / "dqn-small.pt"
    a.save(path)
    a.save(path)
    forge(path, _bad_target)
    r = subprocess.run([sys.executable, "-m", "tui.cli", "models", "--set", f'general.data_dir="{data}"'],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "dqn-small.pt" in ln and "prev" not in ln)
    assert "REFUSED" in line and "extra.target" in line, r.stdout
    prev_line = next(ln for ln in r.stdout.splitlines() if "dqn-small.prev.pt" in ln)
    assert "REFUSED" not in prev_line and prev_line.startswith("dqn"), r.stdout


def _host(tmp_path: Path, save_to: Path, lines: list[tuple[str, str, str]]) -> ModelHost:
    cfg = settings_for(tmp_path / "data")
    host = ModelHost(cfg, lambda *a: lines.append(a), ModelStore(None, save_to))
    agent = host.agents["cob"]
    agent.config.min_replay = 1
    agent.train_on_reward(random_inputs(1), BUY, 0.3)
    assert agent.training_steps > 0
    return host


def test_failed_save_into_an_unwritable_place_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # works as root too, unlike chmod
    lines: list[tuple[str, str, str]] = []
    host = _host(tmp_path, blocker / "checkpoints", lines)
    with caplog.at_level(logging.ERROR, logger="tradedesk.models"):
        assert host.save_checkpoints() == {}
    assert host.save_failures == 1
    s = host.summary()
    assert s["checkpoint_save_failures"] == 1 and "COB checkpoint not saved" in s["checkpoints"]["last_save_failure"]
    assert [(src, lvl) for src, text, lvl in lines if "not saved" in text] == [("models", "error")]  # the desk
    assert any("COB checkpoint not saved" in r.getMessage() for r in caplog.records)  # the log (and stderr)


def test_disk_full_during_save_is_reported_and_keeps_the_old_files(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    lines: list[tuple[str, str, str]] = []
    host = _host(tmp_path, folder, lines)
    host.save_checkpoints()
    host.save_checkpoints()
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert set(before) == {"cob-small.pt", "cob-small.prev.pt"}
    failpoints.fail("checkpoint_after_fsync")  # the host installed the failpoint hook
    assert host.save_checkpoints() == {}
    assert host.save_failures == 1
    assert errno.errorcode[errno.ENOSPC] in host.last_save_failure or "No space left" in host.last_save_failure
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # no temp file either


def test_failed_save_reaches_stderr_log_and_summary(tmp_path: Path) -> None:
    data = tmp_path / "data"
    a = trained(DQNAgent)
    written = a.save(data / "checkpoints" / "dqn-small.pt").read_bytes()  # a loaded model is saved at exit
    line = (b'{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":%d,"p":"100","q":"1",'
            b'"T":1000,"m":false,"M":true}}')
    rec = tmp_path / "ethusdt.txt"
    rec.write_bytes(b"".join(b"%d " % (1_700_000_000_000_000_000 + i) + line % i + b"\n" for i in range(1, 4)))
    out = tmp_path / "summary.json"
    r = subprocess.run([sys.executable, "-m", "tui.cli", "replay", str(rec), "--headless", "--speed", "max",
                        "--summary-json", str(out), "--set", f'general.data_dir="{data}"'], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "TRADEDESK_FAIL_AT": "checkpoint_after_fsync"},
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "DQN checkpoint not saved" in r.stderr and "No space left on device" in r.stderr
    assert "Traceback" not in r.stderr
    assert "DQN checkpoint not saved" in (data / "logs" / "tradedesk.log").read_text()
    s = json.loads(out.read_text())
    assert s["checkpoint_save_failures"] == 1
    assert (data / "checkpoints" / "dqn-small.pt").read_bytes() == written  # the failed save changed nothing

"""Checkpoints: round trip, refusal of damaged/malicious/mismatched files, fallback, atomicity."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.cnn.cnn_agent import CNNAgent
from models.cnn.multitimeframe_cnn import CNNConfig
from models.cob.cob_agent import COBAgent
from models.common import checkpoint as ckpt
from models.common.checkpoint import CheckpointError, NonFiniteWeightsError, list_checkpoints, previous_path
from models.common.schema import BUY, SELL
from models.dqn.dqn_agent import DQNAgent
from tests.conftest import ROOT
from tests.models.test_models_nets import random_inputs
from tests.support.scorecard import record


class Payload:
    """Unpickling this calls ``open(marker, "w")``: creates the marker file as a side effect."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def trained(agent_cls: type, seed: int = 0, steps: int = 6):  # type: ignore[no-untyped-def]
    agent = agent_cls(seed=seed)
    agent.config.min_replay = 1
    for i in range(steps):
        agent.train_on_reward(random_inputs(i), BUY if i % 2 else SELL, 0.5 - i * 0.1)
    for _ in range(3):
        agent.predict(random_inputs(99))
    return agent


@pytest.mark.parametrize("agent_cls", [CNNAgent, DQNAgent, COBAgent])
def test_round_trip_gives_identical_outputs_and_counters(agent_cls: type, tmp_path: Path) -> None:
    a = trained(agent_cls)
    for r in (0.004, -0.002, 0.001):
        a.note_return(r)
    path = a.save(tmp_path / f"{a.kind}.pt", metrics={"loss_ma5": 0.5})
    b = agent_cls(seed=123)
    info = b.load(path)
    assert info == {"path": str(path), "fallback": False, "refused": []}
    assert b.record() == [0.004, -0.002, 0.001]  # the track record travels with the weights
    x = random_inputs(42)
    pa, pb = (
        a.predict(x, explore=False) if a.kind == "dqn" else a.predict(x),
        b.predict(x, explore=False) if b.kind == "dqn" else b.predict(x),
    )
    assert pa.probs == pb.probs
    assert pa.action == pb.action
    assert pa.value == pb.value
    assert b.training_steps == a.training_steps
    assert b.training_steps > 0
    for k, v in a.learner.state_dict().items():
        assert torch.equal(v, b.learner.state_dict()[k]), k
    if agent_cls is DQNAgent:
        assert b.decisions == a.decisions
        assert b.epsilon == a.epsilon
        for k, v in a.target.state_dict().items():
            assert torch.equal(v, b.target.state_dict()[k])
    # training resumes with the restored optimizer moments and replay/outcome buffers (and
    # their samplers): the same next step on both
    a.train_on_reward(x, BUY, 0.2)
    b.train_on_reward(x, BUY, 0.2)
    for k, v in a.learner.state_dict().items():
        assert torch.allclose(v.float(), b.learner.state_dict()[k].float(), atol=1e-6), k


def test_checkpoint_is_self_describing(tmp_path: Path) -> None:
    a = trained(CNNAgent)
    p = a.save(tmp_path / "cnn.pt", metrics={"accuracy": 0.5})
    data = torch.load(p, weights_only=True)
    assert data["kind"] == "cnn"
    assert data["preset"] == "small"
    assert data["format_version"] == ckpt.FORMAT_VERSION
    assert data["schema"]["bar_features"]
    assert data["config"]["channels"] == [64, 128, 128]
    assert data["counters"]["training_steps"] == a.training_steps
    assert data["counters"]["predictions"] == 3
    assert data["parameters"] == a.parameters
    assert data["created"]
    assert data["metrics"] == {"accuracy": 0.5}


def damaged_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    raw = good.read_bytes()
    files = {
        "truncated": raw[: len(raw) // 2],
        "truncated_tail": raw[:-30],
        "zero_length": b"",
        "random_bytes": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "random_with_zip_magic": b"PK\x03\x04" + bytes(range(256)) * 8,
    }
    out = {}
    for name, blob in files.items():
        p = tmp_path / f"{name}.pt"
        p.write_bytes(blob)
        out[name] = p
    return out


def test_damaged_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    good = trained(CNNAgent).save(tmp_path / "good.pt")
    agent = CNNAgent(seed=5)
    before = {k: v.clone() for k, v in agent.learner.state_dict().items()}
    for name, p in damaged_files(tmp_path, good).items():
        with pytest.raises(CheckpointError) as err:
            agent.load(p)
        assert err.value.reason, name
    assert all(torch.equal(v, agent.learner.state_dict()[k]) for k, v in before.items())
    with pytest.raises(CheckpointError, match="empty file"):
        ckpt.read_checkpoint(tmp_path / "zero_length.pt")


def test_pickle_payloads_never_run(tmp_path: Path) -> None:
    # 1. a plain pickle whose __reduce__ writes a marker; prove the payload is live
    live = tmp_path / "proof_plain"
    pickle.loads(pickle.dumps(Payload(live)))
    assert live.exists()
    marker = tmp_path / "pwned_plain"
    evil = tmp_path / "evil_plain.pt"
    evil.write_bytes(pickle.dumps({"format": ckpt.FORMAT, "x": Payload(marker)}))
    with pytest.raises(CheckpointError):
        CNNAgent().load(evil)
    assert not marker.exists()

    # 2. a real torch zip archive carrying the payload: weights_only must stop it
    marker2 = tmp_path / "pwned_zip"
    evil_zip = tmp_path / "evil_zip.pt"
    good = trained(CNNAgent).save(tmp_path / "good.pt")
    data = torch.load(good, weights_only=True)
    data["metrics"] = {"x": Payload(marker2)}
    torch.save(data, evil_zip)
    live2 = tmp_path / "proof_zip"
    data["metrics"] = {"x": Payload(live2)}
    torch.save(data, tmp_path / "proof.pt")
    torch.load(tmp_path / "proof.pt", weights_only=False)
    assert live2.exists()
    with pytest.raises(CheckpointError, match="refused"):
        CNNAgent().load(evil_zip, fallback=False)
    rows = list_checkpoints(tmp_path)
    assert not marker.exists()
    assert not marker2.exists()
    assert any(r["path"].endswith("evil_zip.pt") and "error" in r for r in rows)


def test_schema_mismatch_is_refused_and_previous_kept(tmp_path: Path) -> None:
    path = tmp_path / "cnn.pt"
    a = trained(CNNAgent)
    a.save(path)  # v1
    a.train_on_reward(random_inputs(), BUY, 1.0)
    a.save(path)  # v2; v1 becomes cnn.prev.pt
    v2 = {k: v.clone() for k, v in a.learner.state_dict().items()}
    # a build with a different feature list writes over it (v2 is kept as .prev)
    payload = torch.load(path, weights_only=True)
    payload["schema"] = {**payload["schema"], "bar_features": payload["schema"]["bar_features"][:-1]}
    ckpt.save_checkpoint(path, payload)
    assert previous_path(path).exists()

    b = CNNAgent(seed=9)
    untouched = {k: v.clone() for k, v in b.learner.state_dict().items()}
    with pytest.raises(CheckpointError, match="schema mismatch: bar_features") as err:
        b.load(path, fallback=False)
    assert "checkpoint 13 items" in err.value.reason or "bar_features" in err.value.reason
    assert all(torch.equal(v, b.learner.state_dict()[k]) for k, v in untouched.items())
    info = b.load(path)
    assert info["fallback"]
    assert info["path"] == str(previous_path(path))
    assert "schema mismatch" in info["refused"][0]
    assert all(torch.equal(v, b.learner.state_dict()[k]) for k, v in v2.items())


def test_kind_preset_config_and_version_mismatches_are_refused(tmp_path: Path) -> None:
    p = trained(CNNAgent).save(tmp_path / "cnn.pt")
    with pytest.raises(CheckpointError, match="kind mismatch"):
        DQNAgent().load(p)
    with pytest.raises(CheckpointError, match="preset mismatch"):
        CNNAgent(preset="large", config=CNNConfig.preset("small")).load(p)
    with pytest.raises(CheckpointError, match="config mismatch: channels"):
        CNNAgent(config=CNNConfig(channels=(32, 64, 64))).load(p)
    data = torch.load(p, weights_only=True)
    data["format_version"] = ckpt.FORMAT_VERSION + 1
    torch.save(data, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="newer"):
        CNNAgent().load(tmp_path / "newer.pt")
    # hyperparameters that do not shape the weights may differ: the current settings win
    c = CNNAgent(config=CNNConfig(lr=1e-2))
    c.load(p)
    assert c.optimizer.param_groups[0]["lr"] == 1e-2


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    path = tmp_path / "cob.pt"
    a = trained(COBAgent)
    a.save(path)
    good = path.read_bytes()
    with torch.no_grad():
        next(a.learner.parameters())[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match="non-finite"):
        a.save(path)
    with pytest.raises(NonFiniteWeightsError):
        a.save(tmp_path / "fresh.pt")
    assert path.read_bytes() == good
    assert not (tmp_path / "fresh.pt").exists()
    assert not previous_path(path).exists()  # the refused save did not rotate anything
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cob.pt"]  # and left no temp file


def test_interrupted_save_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "dqn.pt"
    a = trained(DQNAgent)
    a.save(path)
    good = path.read_bytes()

    def dying_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # stands in for SIGKILL / disk full mid-write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        a.save(path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dqn.pt"]


def test_list_checkpoints(tmp_path: Path) -> None:
    cnn = trained(CNNAgent)
    cnn.save(tmp_path / "cnn.pt", metrics={"loss_ma5": 1.25})
    cnn.save(tmp_path / "cnn.pt")
    trained(DQNAgent).save(tmp_path / "dqn.pt")
    (tmp_path / "broken.pt").write_bytes(b"nope")
    rows = {Path(r["path"]).name: r for r in list_checkpoints(tmp_path)}
    assert set(rows) == {"cnn.pt", "dqn.pt", "broken.pt"}
    r = rows["cnn.pt"]
    assert (r["model"], r["preset"], r["parameters"], r["device"]) == ("cnn", "small", cnn.parameters, "CPU")
    assert r["step"] == cnn.training_steps
    assert r["created"]
    assert rows["dqn.pt"]["model"] == "dqn"
    assert "epsilon" in rows["dqn.pt"]["counters"]
    assert "error" in rows["broken.pt"]
    assert len(list_checkpoints(tmp_path, include_previous=True)) == 4
    assert list_checkpoints(tmp_path / "absent") == []


def test_save_points_are_failpoints() -> None:
    """The crash harness arms checkpoint points by name through engine.core.failpoints."""
    from engine.core import failpoints

    assert set(ckpt.SAVE_POINTS) <= set(failpoints.POINTS)


@pytest.mark.parametrize("point", ckpt.SAVE_POINTS)
def test_sigkill_during_save_leaves_the_old_or_the_new_file(tmp_path: Path, point: str) -> None:
    """A real SIGKILL, at a named failpoint inside a save (the worker kills itself there, so
    every kill lands exactly where intended however loaded the machine is): for every kill
    the file is whole, the old one before the new file is moved in and the new one after,
    the backup is whole too, and a current file that had gone bad is in quarantine while
    the good backup is kept."""
    path = tmp_path / "checkpoints" / "cnn-small.pt"
    corrupt = point == "checkpoint_after_quarantine"
    steps = []
    for _ in range(2):  # the second run starts from what the first one's kill left
        r = subprocess.run([sys.executable, "-m", "tests.support.checkpoint_worker", str(path), point,
                            *(["--corrupt"] if corrupt else [])], cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
        assert r.returncode == -signal.SIGKILL, (r.returncode, r.stdout, r.stderr[-2000:])
        saved = [int(w.split()[1]) for w in r.stdout.splitlines() if w.startswith("SAVED ")]
        armed = [int(w.split()[1]) for w in r.stdout.splitlines() if w.startswith("ARMED ")]
        assert len(saved) == 2 and armed == [saved[-1] + 1], r.stdout  # killed inside the armed save
        at = armed[0]
        if corrupt:
            with pytest.raises(CheckpointError, match="checksum"):
                ckpt.read_checkpoint(path)  # the bad file is still there, and refused
            step = ckpt.read_checkpoint(previous_path(path))["counters"]["training_steps"]
            assert step == saved[0]  # the good backup was not replaced by the bad file
            info = CNNAgent().load(path)
            assert info["fallback"] and "checksum" in info["refused"][0]
        else:
            step = ckpt.read_checkpoint(path)["counters"]["training_steps"]  # raises on a partial file
            assert step == (at if point == "checkpoint_after_replace" else saved[-1]), (point, step, saved, at)
            ckpt.read_checkpoint(previous_path(path))  # the backup is whole too
        steps.append(step)
    temps = [q.name for q in path.parent.iterdir() if q.name.endswith(".tmp")]
    if point in ("checkpoint_mid_write", "checkpoint_after_fsync"):
        assert len(temps) == 1, temps  # the first run's dead temp file went at the next save
    held = ckpt.quarantined(path.parent)
    assert len(held) == (3 if corrupt else 0), held  # run 1: 1; run 2: its first save and the armed one
    record(f"models: SIGKILL during checkpoint save ({point})",
           {"kills": 2, "kills at the named point": 2, "partial checkpoints": 0, "good checkpoints lost": 0,
            "steps_after_kill": steps})

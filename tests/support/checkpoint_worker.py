"""Saves checkpoints for the checkpoint crash test (``test_models_checkpoint.py``).

``python -m tests.support.checkpoint_worker PATH POINT`` loads PATH (if it exists), saves a CNN
(small preset, 3.5 MB) to it once in full, then starts a second save and stops dead at
the named POINT of that save, printing ``AT POINT n`` and waiting to be SIGKILLed:

- ``mid_write``: half of the new archive is in the temp file;
- ``after_fsync``: the temp file is whole and synced, nothing renamed yet;
- ``after_prev``: the current file has been linked to ``.prev.pt``, the new one not moved in;
- ``after_replace``: the new file is in place, the directory not synced yet.

Every kill then lands where the test says, whatever the machine's load: nothing depends
on a delay landing inside a write. Lines: ``SAVED n`` after the full save, ``AT POINT n``.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from models.cnn.cnn_agent import CNNAgent
from models.common import checkpoint as ckpt

POINTS = ("mid_write", "after_fsync", "after_prev", "after_replace")


def _stop(point: str, n: int) -> None:
    print(f"AT {point} {n}", flush=True)
    while True:  # the test kills us here
        time.sleep(60)


def _arm(point: str, n: int) -> None:
    """Wrap the calls save_checkpoint makes so the process stops at ``point``."""
    real_save, real_fsync, real_replace = torch.save, os.fsync, os.replace

    def save(obj: Any, f: Any) -> None:
        if point != "mid_write":
            real_save(obj, f)
            return
        buf = io.BytesIO()
        real_save(obj, buf)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        real_fsync(f.fileno())
        _stop(point, n)

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if point == "after_fsync":
            _stop(point, n)

    def replace(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        if point == "after_prev" and str(dst).endswith(".prev.pt"):
            _stop(point, n)
        if point == "after_replace" and not str(dst).endswith(".prev.pt"):
            _stop(point, n)

    ckpt.torch.save = save  # type: ignore[assignment]
    ckpt.os.fsync = fsync  # type: ignore[assignment]
    ckpt.os.replace = replace  # type: ignore[assignment]


def main() -> None:
    path, point = Path(sys.argv[1]), sys.argv[2]
    if point not in POINTS:
        raise SystemExit(f"unknown point {point!r}: expected one of {', '.join(POINTS)}")
    agent = CNNAgent(seed=0)
    n = 0
    if path.exists():
        agent.load(path, fallback=False)  # a refused file fails the worker, and so the test
        n = agent.training_steps
    for armed in (False, True):
        n += 1
        with torch.no_grad():
            for p in agent.learner.parameters():
                p.add_(0.001)
        agent.training_steps = n
        if armed:
            _arm(point, n)
        agent.save(path)
        print(f"SAVED {n}", flush=True)


if __name__ == "__main__":
    main()

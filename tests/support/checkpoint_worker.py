"""Saves checkpoints for the checkpoint crash test (``test_models_checkpoint.py``).

``python -m tests.support.checkpoint_worker PATH POINT [--corrupt]`` loads PATH (falling back
to its ``.prev.pt`` as the desk does), saves a CNN (small preset, 3.5 MB) to it twice in full,
printing ``SAVED n`` after each, then arms the named failpoint of ``engine.core.failpoints``
(one of ``models.common.checkpoint.SAVE_POINTS``), prints ``ARMED n`` and saves once more: the
process SIGKILLs itself when that save reaches the point, exactly there, whatever the
machine's load. ``--corrupt`` flips one bit of the current file's tensor data before the
armed save (bit rot since it was written), so that save must quarantine it.

A save that never reaches the point completes and prints ``SAVED n``, and the worker exits
0: the test sees that as a failure (it expects the SIGKILL).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from engine.core import failpoints
from models.cnn.cnn_agent import CNNAgent
from models.common import checkpoint as ckpt


def flip_a_bit(path: Path) -> None:
    """Flip the lowest bit of one byte inside the first large tensor's data (the zip is stored
    uncompressed, so the tensor's bytes appear as they are in the file)."""
    raw = path.read_bytes()
    data = torch.load(path, weights_only=True)
    big = max(data["state_dict"].values(), key=lambda t: t.numel())
    needle = big.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()[:256]
    at = raw.find(needle)
    if at < 0:
        raise SystemExit("tensor bytes not found in the archive")
    with open(path, "r+b") as f:
        f.seek(at + 100)
        byte = raw[at + 100]
        f.write(bytes([byte ^ 0x01]))


def main() -> None:
    path, point = Path(sys.argv[1]), sys.argv[2]
    corrupt = "--corrupt" in sys.argv[3:]
    if point not in ckpt.SAVE_POINTS:
        raise SystemExit(f"unknown point {point!r}: expected one of {', '.join(ckpt.SAVE_POINTS)}")
    ckpt.set_failpoint(failpoints.hit)
    agent = CNNAgent(seed=0)
    n = 0
    if path.exists() or ckpt.previous_path(path).exists():
        agent.load(path)  # nothing loadable fails the worker, and so the test
        n = agent.training_steps
    for armed in (False, False, True):
        n += 1
        with torch.no_grad():
            for p in agent.learner.parameters():
                p.add_(0.001)
        agent.training_steps = n
        if armed:
            if corrupt:
                flip_a_bit(path)
            failpoints.arm(point, 1)
            print(f"ARMED {n}", flush=True)
        agent.save(path)
        print(f"SAVED {n}", flush=True)


if __name__ == "__main__":
    main()

"""Saves checkpoints in a loop for the checkpoint crash test (``test_models_checkpoint.py``).

``python -m tests.checkpoint_worker PATH`` saves a CNN (small preset, 3.5 MB) to PATH
again and again, with different weights and ``training_steps =
n`` each time, printing ``BEGIN n`` before and ``SAVED n`` after each save (flushed). The
test SIGKILLs it at random moments, most of them inside a save.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from models.agents import CNNAgent


def main() -> None:
    path = Path(sys.argv[1])
    agent = CNNAgent(seed=0)
    n = 0
    if path.exists():
        agent.load(path, fallback=False)  # a refused file fails the worker, and so the test
        n = agent.training_steps
    print("READY", flush=True)
    while True:
        n += 1
        with torch.no_grad():
            for p in agent.learner.parameters():
                p.add_(0.001)
        agent.training_steps = n
        print(f"BEGIN {n}", flush=True)
        agent.save(path)
        print(f"SAVED {n}", flush=True)


if __name__ == "__main__":
    main()

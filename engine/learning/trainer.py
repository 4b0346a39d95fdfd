"""Learning on close in its own thread: a bounded queue of jobs, results back to the loop.

Training never blocks ingest, decisions or the UI: a job that does not fit in the queue
is dropped and counted. Results are published by the engine's loop (:meth:`drain`),
never from the training thread.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.common.base_agent import Agent, Experience
    from models.common.inputs import ModelInputs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrainJob:
    """One thing for one model to learn from. ``source`` says what it is:

    - "account" / "shadow": a closed position (``experience``, ``reward`` × ``scale``);
    - "counterfactual": what BUY / HOLD / SELL would have earned from ``inputs`` (``rewards``);
    - "label": a confirmed perfect move, ``action`` on head ``timeframe`` of ``inputs``.
    """

    model: str
    source: str
    reward: float
    scale: float = 1.0
    position_id: int | None = None
    experience: Experience | None = None
    inputs: ModelInputs | None = None
    rewards: tuple[float, float, float] | None = None
    timeframe: int = 0
    action: int = 0

    def run(self, agent: Agent) -> float | None:
        if self.source == "counterfactual":
            assert self.inputs is not None
            assert self.rewards is not None
            return agent.train_on_counterfactual(self.inputs, self.rewards, scale=self.scale)
        if self.source == "label":
            assert self.inputs is not None
            return agent.train_on_label(self.inputs, self.timeframe, self.action, weight=self.scale)
        assert self.experience is not None
        return agent.train_on_outcome(self.experience, self.reward, scale=self.scale)


@dataclass
class TrainResult:
    model: str
    position_id: int | None
    reward: float
    scale: float
    loss: float | None
    step: int
    wall_ms: float
    skipped: str = ""
    source: str = "account"


class Trainer:
    """One training thread (``torch.set_num_threads(1)``) over the host's agents."""

    def __init__(self, agents: Mapping[str, Agent], queue_size: int) -> None:
        self.agents = agents
        self._q: queue.Queue[TrainJob | None] = queue.Queue(maxsize=queue_size)
        self._results: deque[TrainResult] = deque()
        self.wall_ms: deque[float] = deque(maxlen=10_000)
        self.training_now = False  # a step is running (decisions made meanwhile are timed apart, B6)
        self._thread = threading.Thread(target=self._loop, name="trainer", daemon=True)
        self._thread.start()

    def submit(self, job: TrainJob) -> bool:
        """Queue a job; False (nothing queued) when the queue is full."""
        try:
            self._q.put_nowait(job)
        except queue.Full:
            return False
        return True

    def wait(self) -> None:
        """Block until every queued job is done (replay: train-on-close finishes before the next prediction)."""
        self._q.join()

    @property
    def has_results(self) -> bool:
        return bool(self._results)

    def drain(self) -> list[TrainResult]:
        out = []
        while self._results:
            out.append(self._results.popleft())
        return out

    def close(self, timeout_s: float = 60.0) -> None:
        self._q.put(None)
        self._thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        import torch

        torch.set_num_threads(1)
        while True:
            job = self._q.get()
            try:
                if job is None:
                    return
                agent = self.agents[job.model]
                self.training_now = True
                t0 = time.perf_counter()
                skipped = ""
                agent.last_skip = ""
                try:
                    loss = job.run(agent)
                except Exception as exc:  # a failing update must not kill the trainer
                    loss, skipped = None, f"error: {exc}"
                    log.exception("training %s failed", job.model)
                if loss is not None and not math.isfinite(loss):
                    loss, skipped = None, "non-finite loss"
                if loss is None and not skipped:
                    skipped = agent.last_skip or "no update"
                self.training_now = False
                self.wall_ms.append((time.perf_counter() - t0) * 1e3)
                self._results.append(TrainResult(job.model, job.position_id, job.reward, job.scale, loss,
                                                 agent.training_steps, (time.perf_counter() - t0) * 1e3,
                                                 skipped, job.source))
            finally:
                self._q.task_done()

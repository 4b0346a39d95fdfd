"""The one inference thread: every due model on the same inputs, one job at a time.

Replay and backtest wait for the job (so the same recording gives the same decisions);
live, the result comes back to the event loop by callback and the feed never waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.common.base_agent import Agent
    from models.common.inputs import ModelInputs, Prediction

Results = dict[str, "Prediction | Exception"]


class InferenceThread:
    """Runs ``agent.predict`` for the due models on a single thread (``torch.set_num_threads(1)``)."""

    def __init__(self, agents: Mapping[str, Agent]) -> None:
        import torch

        self.agents = agents
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="inference", initializer=torch.set_num_threads,
                                        initargs=(1,))
        self._inflight: Future[Results] | None = None

    @property
    def busy(self) -> bool:
        """A live job is still running (the next one is skipped, never queued behind it)."""
        return self._inflight is not None and not self._inflight.done()

    def predict_all(self, run: list[str], inputs: ModelInputs) -> Results:
        """Runs on the inference thread: a refusal or failure is returned, not raised."""
        out: Results = {}
        for key in run:
            try:
                out[key] = self.agents[key].predict(inputs)
            except Exception as exc:  # refused (warming up, non-finite) or a real failure
                out[key] = exc
        return out

    def run_now(self, run: list[str], inputs: ModelInputs) -> Results:
        """Replay: run the job and wait for it."""
        return self._pool.submit(self.predict_all, run, inputs).result()

    def run_later(self, run: list[str], inputs: ModelInputs, done: Callable[[Results], None]) -> None:
        """Live: run the job and call ``done(results)`` on the running event loop when it ends."""
        fut = self._pool.submit(self.predict_all, run, inputs)
        self._inflight = fut
        loop = asyncio.get_running_loop()

        def finished(f: Future[Results]) -> None:
            loop.call_soon_threadsafe(self._deliver, f, done)

        fut.add_done_callback(finished)

    def _deliver(self, f: Future[Results], done: Callable[[Results], None]) -> None:
        self._inflight = None
        done(f.result())

    def close(self) -> None:
        self._pool.shutdown(wait=True)


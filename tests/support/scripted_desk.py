"""The desk over a scripted door: a real engine (no feed, paper venue) behind a DeskPort
whose snapshots a test can bend (``port.changes``: fields replaced in every snapshot), and
a feed driver the test ends or breaks by hand. The desk sees only the port, as in
production, so the test can show it any state the engine can be in: exchange unreachable,
a replay running or over, without waiting for a real feed to get there."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from engine.core.engine import Engine
from engine.core.events import Command
from engine.core.snapshot import DeskSnapshot
from engine.kernel import build_engine
from tests.support.config import settings_for
from tui.app import DeskApp


class ScriptedPort:
    """A DeskPort over ``engine`` whose snapshots carry ``changes``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.changes: dict[str, Any] = {}
        self.sent: list[Command] = []

    def snapshot(self) -> DeskSnapshot:
        return dataclasses.replace(self.engine.snapshot(), **self.changes)

    def send(self, cmd: Command) -> None:
        self.sent.append(cmd)
        self.engine.send(cmd)

    def confirm_live(self, typed: str) -> bool:
        return self.engine.confirm_live(typed)


class ManualDriver:
    """A feed that runs until the test ends it (``end``) or breaks it (``fail``)."""

    def __init__(self) -> None:
        self._done = asyncio.Event()
        self._error: Exception | None = None
        self.stopped_because = ""

    async def run(self) -> None:
        await self._done.wait()
        if self._error is not None:
            raise self._error

    def end(self) -> None:
        self._done.set()

    def fail(self, error: Exception) -> None:
        self._error = error
        self._done.set()

    def stop(self, why: str) -> None:
        self.stopped_because = why
        self.end()


def scripted_desk(tmp_path: Path, *overrides: str, mode: str = "live") -> tuple[DeskApp, ScriptedPort, ManualDriver]:
    cfg = settings_for(tmp_path / "data", "models.enabled=[]", "trading.auto_trade=false", "ui.refresh_hz=10",
                       *overrides)
    port = ScriptedPort(build_engine(cfg, mode=mode))
    driver = ManualDriver()
    return DeskApp(cfg, port, driver), port, driver


async def wait_for(pilot: Pilot[Any], cond: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Wait for ``cond`` without assuming how fast this machine is."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)

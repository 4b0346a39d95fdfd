"""The Textual app: one desk screen over an engine, with the feed driver in the app's loop.

The engine is single-threaded asyncio. The driver (replay or live feed, anything with
``async run()``) runs as a worker in the app's own event loop, so market data, commands
and the UI share one thread and never need locks; the UI only reads snapshots. The app
and its screens hold the engine as a :class:`~engine.core.ports.DeskPort`; only
:func:`run_desk`, which closes the session at the end, sees more of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from textual.app import App
from textual.binding import Binding, BindingType
from textual.worker import Worker, WorkerState

from tui import format as fmt
from tui.screens.desk import KEY_PREFIX, DeskScreen, FeedStatus
from tui.screens.dialogs import ConfirmQuit
from tui.widgets.positions_pane import side_word

if TYPE_CHECKING:
    from engine.core.ports import DeskPort
    from engine.core.settings import Settings
    from engine.kernel import Session

log = logging.getLogger(__name__)

#: How long quitting waits for the feed to stop by itself before cancelling it.
FEED_STOP_S = 3.0


class Driver(Protocol):
    """A feed that pushes market data into the engine until it ends (replay) or forever (live)."""

    async def run(self) -> None: ...


@runtime_checkable
class StoppableDriver(Driver, Protocol):
    """A feed that wants to be stopped its own way (the live driver closes its sockets)."""

    def stop(self, why: str) -> None: ...


def keymap_from(cfg: Settings) -> dict[str, str]:
    """Settings [keys] as a Textual keymap: binding id -> key (comma-separated for several)."""
    return {KEY_PREFIX + name: str(key) for name, key in cfg.as_dict()["keys"].items()}


#: Exit code of the desk when the user asked for the sample replay (live feed unreachable).
SWITCH_TO_DEMO = 75


class DeskApp(App[int]):
    """tradedesk's terminal app: the desk screen, the dialogs, and the feed worker."""

    CSS_PATH = "desk.tcss"
    TITLE = "tradedesk"
    # Every action is a key on the desk; the palette would only duplicate them.
    ENABLE_COMMAND_PALETTE = False
    # Ctrl-C quits like q (asking when a position is open); pressed again, it quits anyway.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "request_quit", "Quit", show=False, priority=True),
        Binding("ctrl+c", "request_quit", "Quit", show=False, priority=True, system=True),
    ]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # noqa: RUF012 - Textual declares it per instance
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]  # noqa: RUF012 - Textual declares it per instance

    def __init__(self, cfg: Settings, port: DeskPort, driver: Driver, desk: DeskScreen | None = None) -> None:
        """``desk`` replaces the desk screen (the desk's benchmark probes its mount)."""
        super().__init__()
        self.cfg = cfg
        self.port = port
        self.driver = driver
        self.desk = desk if desk is not None else DeskScreen(cfg, port)
        self.feed_worker: Worker[None] | None = None

    def on_mount(self) -> None:
        self.set_keymap(keymap_from(self.cfg))
        self.push_screen(self.desk)
        self.feed_worker = self.run_worker(self.driver.run(), name="feed", group="feed",
                                           description=type(self.driver).__name__, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self.feed_worker:
            return
        if event.state is WorkerState.SUCCESS:
            # Nothing is left queued: every key's command ran when it was sent (DeskPort.send).
            if self.port.snapshot().run_mode != "replay":  # a finished replay is announced by the desk's refresh
                self.desk.feed_status = FeedStatus("feed ended: no more market data", "alert")
        elif event.state is WorkerState.ERROR:
            err = event.worker.error
            log.error("feed driver failed", exc_info=err)
            self.desk.feed_status = FeedStatus(f"FEED STOPPED: {type(err).__name__}: {err}", "alert")
            self.desk.note(f"feed stopped: {type(err).__name__}: {err}", "error")

    def on_desk_screen_sample_replay_requested(self, _: DeskScreen.SampleReplayRequested) -> None:
        self.exit(return_code=SWITCH_TO_DEMO)

    def handle_bindings_clash(self, clashed_bindings: set[Binding], node: Any) -> None:
        keys = ", ".join(sorted({b.key for b in clashed_bindings}))
        self.notify(f"settings [keys]: {keys} bound twice; check the keys section", severity="warning")

    async def action_request_quit(self) -> None:
        if isinstance(self.screen, ConfirmQuit):
            await self.quit_desk()  # asked already: a second quit key means quit
            return
        positions = self.port.snapshot().positions
        if not positions:
            await self.quit_desk()
            return
        detail = "\n".join(
            f"{side_word(p.side)} {fmt.qty(p.qty)} {p.symbol} @ {fmt.price(p.entry_price)}  "
            f"uPnL {fmt.signed(p.unrealised)}"
            for p in positions
        )
        detail += "\nQuitting leaves it open on the account."

        async def answered(quit_: bool | None) -> None:
            if quit_:
                await self.quit_desk()

        self.push_screen(ConfirmQuit(detail), answered)

    async def quit_desk(self) -> None:
        """Stop the feed the way it wants to be stopped (the live driver closes its sockets
        and sessions), then leave; a feed that does not stop in time is cancelled."""
        worker = self.feed_worker
        if worker is not None and worker.is_running and isinstance(self.driver, StoppableDriver):
            self.driver.stop("desk closed")
            with contextlib.suppress(Exception):  # its outcome is logged by on_worker_state_changed
                await asyncio.wait_for(worker.wait(), FEED_STOP_S)
        self.exit(0)


def run_desk(cfg: Settings, session: Session) -> int:
    """Run the desk over ``session`` until the user quits, then close the session; returns
    the process exit code."""
    if session.driver is None:
        raise TypeError("the desk needs a session with a feed (live or replay)")
    app = DeskApp(cfg, session.engine, session.driver)
    try:
        app.run()
    finally:
        session.close()  # checkpoints saved, ledger closed, whatever way the app ended
    if app.desk.refreshes:
        stats = app.desk.refresh_stats()
        log.info("desk refresh: %.0f refreshes, %.2f ms mean, %.2f ms p95, %.2f ms max; %d chart redraws, %.1f ms mean",
                 stats["n"], stats["mean_ms"], stats["p95_ms"], stats["max_ms"], stats["chart_draws"], stats["chart_ms"])
    host = session.brain.host if session.brain is not None else None
    if host is not None and host.save_failures:  # the desk's log line went with the screen
        print(f"tradedesk: {host.save_failures} checkpoint save(s) failed; the last: {host.last_save_failure}",
              file=sys.stderr)
    snap = session.engine.snapshot()
    print(f"tradedesk: desk closed; {len(snap.closed)} closed trades, realised PnL {fmt.signed(snap.realised_pnl)}, "
          f"{len(snap.positions)} open", file=sys.stderr)
    return app.return_code or 0

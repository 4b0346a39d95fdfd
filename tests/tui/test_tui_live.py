"""The desk over the live feed driver, against the fake exchange on 127.0.0.1 replaying the
real recordings: per-stream state in the header, and a feed that goes away shows as a
banner with dimmed numbers, never as live ones."""

from __future__ import annotations

import argparse
import time

import pytest
from rich.text import Text
from textual.widgets import Input
from textual.worker import WorkerState

from engine.kernel import live_executor, live_session, replay_session
from engine.testing.fake_exchange import FakeExchange, Scenario
from tests.support.config import settings_for
from tests.support.livekit import live_settings
from tui.app import DeskApp
from tui.widgets.header import Banner, DeskHeader

pytestmark = pytest.mark.timeout(120)


def plain(widget) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


async def wait_for(pilot, cond, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)


def args() -> argparse.Namespace:
    return argparse.Namespace(live=False, headless=False, max_seconds=None, minutes=None, until_closed=False)


async def test_live_desk_shows_streams_then_a_lost_feed_as_not_live(btc_files, tmp_path):
    # Five recorded seconds at real speed, then the exchange closes and stops listening: the
    # feed keeps retrying and the book goes STALE.
    scenario = Scenario(window_s=5, speed=1.0)
    async with FakeExchange(btc_files, scenario) as fx:
        cfg = live_settings(tmp_path, fx, "exchange.stale_after_s=0.5", "symbols.primary=BTC/USDT",
                            'symbols.reference=""', "ui.refresh_hz=10")
        session = live_session(cfg, models=False)
        engine, driver = session.engine, session.live
        app = DeskApp(cfg, engine, driver)
        async with app.run_test(size=(160, 48)) as pilot:
            desk = app.desk
            header = desk.query_one(DeskHeader)
            def streaming() -> bool:
                # The driver refreshes its stream view a few times a second; wait for one with ages.
                text = plain(header)
                return "book LIVE" in text and "feed: live on" in text and "trade never" not in text

            await wait_for(pilot, streaming, "the BTCUSDT book LIVE with every stream reporting")
            text = plain(header)
            assert "PAPER" in text
            for stream in ("trade", "depth", "bbo"):
                assert f" {stream} " in text, text
            assert not desk.has_class("-stale")

            banner = desk.query_one(Banner)

            def lost() -> bool:
                text = plain(banner).lower()
                return banner.display and ("stale" in text or "not live" in text)

            await wait_for(pilot, lost, "the banner for the lost feed")
            assert banner.has_class("-alert")
            await wait_for(pilot, lambda: "book STALE" in plain(header), "the header to say the book is STALE")
            assert desk.has_class("-stale"), "numbers of a book that is not LIVE are dimmed"
            assert app.is_running, "the desk stays up while the feed retries"

            # q (flat: no question) stops the feed the way it stops, then quits.
            await pilot.press("q")
            await wait_for(pilot, lambda: not app.is_running, "the desk to quit")
        assert app.feed_worker is not None
        assert app.feed_worker.state is WorkerState.SUCCESS, app.feed_worker.state
        assert driver.stopped_because == "desk closed"


KEY = "desk-canary-key-5d1e77"
SECRET = "desk-canary-secret-93ab40"


async def test_live_orders_wait_for_the_typed_phrase_and_secrets_never_show(btc_files, tmp_path):
    from engine.core.events import PauseReplay
    from engine.execution.ledger import Ledger
    from tests.support.fake_ccxt import FakeFactory
    from tui.screens.desk import DeskScreen
    from tui.screens.dialogs import ConfirmLive
    from tui.widgets.logs import EventLog

    # A live executor (the fake ccxt stands in for the exchange; nothing is sent here) over
    # the recorded market, paused at the start: this test is about the confirmation.
    cfg = live_settings(tmp_path, None, "ui.refresh_hz=10")
    executor = live_executor(cfg, env={"TRADEDESK_API_KEY": KEY, "TRADEDESK_API_SECRET": SECRET},
                             exchange_factory=FakeFactory())
    session = replay_session(cfg, btc_files, 50.0, mode="live", models=False,
                             ledger=Ledger(tmp_path / "live.db", "live"), executor=executor)
    engine, replay = session.engine, session.replay
    engine.submit(PauseReplay(True))
    engine.run_commands()
    phrase = engine.live_confirmation_phrase
    assert phrase
    app = DeskApp(cfg, engine, replay)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmLive), "the live confirmation")
        await pilot.press(*"yes", "enter")
        assert isinstance(app.screen, DeskScreen)
        assert engine.live_confirmation_required
        log = app.desk.query_one("#signal-log", EventLog)
        assert any("not the phrase" in line for line in log.plain_lines())

        await pilot.press("b")  # an order would be denied: the desk asks again instead
        assert isinstance(app.screen, ConfirmLive)
        assert engine.fills == []
        # Typing is the Input's job (shown above with "yes"); fill the phrase in one go.
        app.screen.query_one(Input).value = phrase
        await pilot.press("enter")
        assert isinstance(app.screen, DeskScreen)
        assert not engine.live_confirmation_required
        assert any("LIVE trading confirmed" in line for line in log.plain_lines())

        screen_text = app.export_screenshot()
        assert KEY not in screen_text
        assert SECRET not in screen_text


async def test_unreachable_exchange_offers_the_sample_replay_on_a_key(tmp_path):
    """Offline: the desk says it cannot reach the exchange, keeps retrying, and `r` leaves
    for the sample replay (the CLI then runs `tradedesk demo`)."""
    import socket

    from tui.app import SWITCH_TO_DEMO

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = settings_for(tmp_path, f'exchange.ws_url="ws://127.0.0.1:{port}"', f'exchange.rest_url="http://127.0.0.1:{port}"',
                       "exchange.backoff_base_s=0.1", "exchange.backoff_max_s=0.5", "ui.refresh_hz=10",
                       "exchange.backfill=false")
    session = live_session(cfg, models=False)
    engine, driver = session.engine, session.live
    app = DeskApp(cfg, engine, driver)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: str(engine.feed_info.get("status", "")).startswith("cannot reach"),
                       "the feed to report the exchange unreachable")
        await wait_for(pilot, lambda: "cannot reach" in plain(app.desk.query_one(DeskHeader))
                       + plain(app.desk.query_one(Banner)), "the desk to say the exchange is unreachable")
        await wait_for(pilot, lambda: "sample_replay" in app.desk.key_map(), "the r key")
        await pilot.press("r")
        await wait_for(pilot, lambda: not app.is_running, "the desk to leave for the sample replay")
    assert app.return_code == SWITCH_TO_DEMO

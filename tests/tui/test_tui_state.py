"""The desk's state as reactives: which keys apply follows the state they depend on
(``bindings=True``, ``check_action``), the feed's end reaches the banner as an attribute
set by the app, and the sample replay request flows up to the app as a message."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets._footer import FooterKey

from tests.support.scripted_desk import scripted_desk, wait_for
from tui.app import SWITCH_TO_DEMO
from tui.screens.desk import DeskScreen, FeedStatus
from tui.widgets.header import Banner
from tui.widgets.logs import EventLog

WIDE = (160, 48)
UNREACHABLE = {"status": "cannot reach ws://127.0.0.1:9/stream: connection refused; retrying in 0.5 s"}


def footer_actions(desk: DeskScreen) -> set[str]:
    return {k.action for k in desk.query(FooterKey)}


def plain(widget) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


def log_text(desk: DeskScreen) -> str:
    return "\n".join(desk.query_one("#signal-log", EventLog).plain_lines())


async def test_sample_replay_key_applies_only_while_the_exchange_is_unreachable(tmp_path):
    app, port, _ = scripted_desk(tmp_path)
    messages: list[Message] = []
    async with app.run_test(size=WIDE, message_hook=messages.append) as pilot:
        desk = app.desk
        await wait_for(pilot, lambda: "help" in footer_actions(desk), "the footer")
        assert not desk.offline
        assert "sample_replay" not in footer_actions(desk)
        assert "sample_replay" not in desk.key_map()
        await pilot.press("r")  # does not apply: nothing happens
        assert app.is_running
        assert not any(isinstance(m, DeskScreen.SampleReplayRequested) for m in messages)

        port.changes["feed"] = UNREACHABLE
        await wait_for(pilot, lambda: desk.offline, "the desk to see the exchange unreachable")
        await wait_for(pilot, lambda: "sample_replay" in footer_actions(desk), "the r key in the footer")
        assert desk.key_map()["sample_replay"][0] == "r"
        assert "press r for the sample replay" in log_text(desk)

        port.changes["feed"] = {"status": "live on wss://stream"}  # reachable again: the key goes
        await wait_for(pilot, lambda: "sample_replay" not in footer_actions(desk), "the r key to leave the footer")
        assert "sample_replay" not in desk.key_map()

        port.changes["feed"] = UNREACHABLE
        await wait_for(pilot, lambda: "sample_replay" in footer_actions(desk), "the r key back in the footer")
        await pilot.press("r")
        await wait_for(pilot, lambda: not app.is_running, "the app to leave for the sample replay")
    assert any(isinstance(m, DeskScreen.SampleReplayRequested) for m in messages), "the request flowed up as a message"
    assert app.return_code == SWITCH_TO_DEMO


async def test_pause_key_applies_only_while_a_replay_runs(tmp_path):
    app, port, _ = scripted_desk(tmp_path, mode="replay")
    async with app.run_test(size=WIDE) as pilot:
        desk = app.desk
        await wait_for(pilot, lambda: "pause" in footer_actions(desk), "the pause key in the footer")
        assert desk.replay_running
        await pilot.press("space")
        assert port.engine.paused, "space sent the pause"
        await pilot.press("space")
        assert not port.engine.paused

        port.changes["replay"] = {"done": True}
        await wait_for(pilot, lambda: desk.replay_done, "the desk to see the replay over")
        assert not desk.replay_running
        await wait_for(pilot, lambda: "pause" not in footer_actions(desk), "the pause key to leave the footer")
        assert "pause" not in desk.key_map()
        sent = len(port.sent)
        await pilot.press("space")  # no longer applies: no command
        assert len(port.sent) == sent
        assert "replay finished" in plain(desk.query_one(Banner))
        assert "replay finished: the desk stays open" in log_text(desk)


async def test_a_live_desk_never_offers_pause(tmp_path):
    app, _, _ = scripted_desk(tmp_path, mode="live")
    async with app.run_test(size=WIDE) as pilot:
        desk = app.desk
        await wait_for(pilot, lambda: "help" in footer_actions(desk), "the footer")
        assert not desk.replay_running
        assert "pause" not in footer_actions(desk)


async def test_the_feed_ending_reaches_the_banner_from_the_app(tmp_path):
    app, _, driver = scripted_desk(tmp_path, mode="live")
    async with app.run_test(size=WIDE) as pilot:
        desk = app.desk
        await wait_for(pilot, lambda: desk.snap is not None, "the first snapshot")
        assert desk.feed_status == FeedStatus()
        driver.end()
        await wait_for(pilot, lambda: desk.feed_status.text != "", "the app to pass the feed's end down")
        assert desk.feed_status == FeedStatus("feed ended: no more market data", "alert")
        banner = desk.query_one(Banner)
        assert "feed ended: no more market data" in plain(banner)
        assert banner.has_class("-alert")


async def test_a_failing_feed_shows_why_in_the_banner_and_the_log(tmp_path):
    app, _, driver = scripted_desk(tmp_path, mode="live")
    async with app.run_test(size=WIDE) as pilot:
        desk = app.desk
        await wait_for(pilot, lambda: desk.snap is not None, "the first snapshot")
        driver.fail(ConnectionError("socket closed by peer"))
        await wait_for(pilot, lambda: desk.feed_status.level == "alert", "the app to pass the failure down")
        assert "FEED STOPPED: ConnectionError: socket closed by peer" in plain(desk.query_one(Banner))
        assert "feed stopped: ConnectionError: socket closed by peer" in log_text(desk)
        assert app.is_running, "the desk stays up to show it"


async def test_quitting_stops_the_feed_its_own_way(tmp_path):
    app, _, driver = scripted_desk(tmp_path, mode="live")
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: app.desk.snap is not None, "the first snapshot")
        await pilot.press("q")  # flat: no question
        await wait_for(pilot, lambda: not app.is_running, "the desk to quit")
    assert driver.stopped_because == "desk closed"
    assert app.return_code == 0


def test_the_cli_opens_the_demo_with_its_own_options(monkeypatch, tmp_path):
    """After the desk asked for the sample replay, the live command runs the demo on a
    namespace of its own (samples looked up, speed 1), not on the live command's."""
    import argparse

    import tui.app
    from tests.support.config import settings_for
    from tui import cli

    opened: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, "live_session_from_args", lambda cfg, args: None)
    monkeypatch.setattr(tui.app, "run_desk", lambda cfg, session: SWITCH_TO_DEMO)
    monkeypatch.setattr(cli, "cmd_demo", lambda args, cfg: opened.append(args) or 0)
    args = argparse.Namespace(live=False, headless=False, max_seconds=None)
    assert cli.cmd_live(args, settings_for(tmp_path)) == 0
    (demo,) = opened
    assert (demo.samples, demo.speed, demo.headless) == (None, "1", False)
    assert not hasattr(args, "samples"), "the live command's namespace is left as it was"

"""The desk over the real engine replaying the real BTCUSDT recording.

Every test drives the real engine and the real replay of ../shared/data through the
Textual app with Pilot; nothing in the engine is replaced. Models are switched off
(``models.enabled=[]``) and automatic trading too, so every order in these tests is one
the test pressed a key for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable

from engine.core.events import DecisionMade, PauseReplay
from engine.kernel import replay_session
from tests.support.config import settings_for
from tui import format as fmt
from tui.app import DeskApp
from tui.screens.desk import DeskScreen
from tui.screens.dialogs import ConfirmQuit, HelpScreen
from tui.widgets.charts import PriceChart, SecondsChart
from tui.widgets.header import Banner, DeskHeader
from tui.widgets.logs import EventLog
from tui.widgets.models_pane import LABEL_WIDTH, PRIMARY, ModelsPane, model_name

WIDE = (160, 48)
SMALL = (80, 24)


def desk_settings(tmp_path: Path, *extra: str):
    return settings_for(
        tmp_path / "data",
        "models.enabled=[]",  # no models: every order below comes from a key press
        "trading.auto_trade=false",
        "ui.refresh_hz=10",
        *extra,
    )


def make_desk(tmp_path: Path, files: list[Path], speed: float | None, *extra: str):
    cfg = desk_settings(tmp_path, *extra)
    # linger, as `tradedesk replay` does: time moves on after the data ends
    session = replay_session(cfg, files, speed, linger=True)
    engine, replay = session.engine, session.replay
    return DeskApp(cfg, engine, replay), engine, replay


async def wait_for(pilot: Pilot, cond: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)


async def press(pilot: Pilot, *keys: str) -> None:
    """Press keys one at a time, as a person would.

    ``Pilot.press`` waits for the process to go idle after each key (up to 1 s, twice);
    a running replay keeps the process busy, so it would cost 2 s per key. This sends the
    same key events and waits until the app and the desk have processed them (a key is
    forwarded app -> screen, hence a few rounds).
    """
    for key in keys:
        pilot.app.simulate_key(key)
        for _ in range(3):
            await pilot.pause(0)


def orders_filled(engine) -> int:
    """Orders with at least one fill (a market order may take several book levels)."""
    return len({f.order_id for f in engine.fills})


def book_live(engine) -> bool:
    return any(v.book_state == "LIVE" for v in engine.snapshot().symbols)


def log_text(log: EventLog) -> str:
    return "\n".join(log.plain_lines())


def plain(widget) -> str:
    """What a Static shows, as plain text."""
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


async def test_buy_then_sell_during_replay_closes_one_trade_with_realised_pnl(btc_files, tmp_path):
    app, engine, replay = make_desk(tmp_path, btc_files, 50.0)
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: book_live(engine), "the BTCUSDT book to be LIVE")
        await press(pilot, "b")
        # Paper orders reach the simulated venue after its latency, in market time.
        await wait_for(pilot, lambda: len(engine.portfolio.positions) == 1, "the buy to fill")
        bars = len(engine.snapshot().candles)

        def next_bar() -> bool:
            # Bars open on exchange time, fills are stamped on the receive clock (about a
            # second behind in this recording): wait until the clock is inside the new bar.
            snap = engine.snapshot()
            return len(snap.candles) > bars and snap.now_ns > snap.candles[-1].open_time + 2_000_000_000

        # Sell in a later 1m bar, so the buy and the sell markers land on different candles.
        await wait_for(pilot, next_bar, "the next 1m bar")
        await press(pilot, "s")
        await wait_for(pilot, lambda: not engine.portfolio.positions, "the sell to fill")
        assert not replay.done, "the trade must happen while the replay runs"
        assert len(engine.portfolio.closed) == 1
        assert orders_filled(engine) == 2
        closed = engine.portfolio.closed[0]
        assert closed.realised_pnl == engine.portfolio.realised_pnl

        desk = app.desk
        table = desk.query_one("#closed-trades", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, "the closed trade in the positions pane")
        row = table.get_row(str(closed.position_id))
        assert row[1].plain == "LONG"
        assert row[2].plain == fmt.signed(closed.realised_pnl)
        assert Decimal(row[3]) == closed.qty
        totals = plain(desk.query_one("#session-totals"))
        assert f"session PnL {fmt.signed(closed.realised_pnl)}" in totals
        assert "flat" in plain(desk.query_one("#open-positions"))
        assert "closed BUY BTC/USDT" in log_text(desk.query_one("#signal-log", EventLog))

        # The main chart shows the executed trades: one buy and one sell marker.
        chart = desk.query_one(PriceChart)
        await wait_for(pilot, lambda: "▲" in chart.last_plain and "▼" in chart.last_plain,
                       "the fill markers on the main chart")


async def test_key_spam_sends_one_order_per_press(btc_files, tmp_path):
    app, engine, _ = make_desk(tmp_path, btc_files, 50.0)
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: book_live(engine), "the BTCUSDT book to be LIVE")
        await press(pilot, *"bbbbb")
        await wait_for(pilot, lambda: orders_filled(engine) >= 5, "five buys to fill")
        await pilot.pause(0.3)  # market time passes: nothing more may fill
        assert orders_filled(engine) == 5
        assert len(engine.portfolio.positions) == 1
        await press(pilot, "c")
        await wait_for(pilot, lambda: not engine.portfolio.positions, "the close to fill")
        assert orders_filled(engine) == 6
        assert len(engine.portfolio.closed) == 1
        await press(pilot, "c")  # nothing left to close: said so, no order
        await pilot.pause(0.3)
        assert orders_filled(engine) == 6
        assert "no open BTC/USDT position to close" in log_text(app.desk.query_one("#signal-log", EventLog))


async def test_panic_flattens_halts_and_says_so(btc_files, tmp_path):
    app, engine, _ = make_desk(tmp_path, btc_files, 50.0)
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: book_live(engine), "the BTCUSDT book to be LIVE")
        await press(pilot, "b")
        await wait_for(pilot, lambda: engine.portfolio.positions, "the buy to fill")
        await press(pilot, "x")
        await wait_for(pilot, lambda: not engine.portfolio.positions, "the panic flatten to fill")
        assert engine.trading_state == "HALTED"
        banner = app.desk.query_one(Banner)
        await wait_for(pilot, lambda: banner.display and "HALTED" in plain(banner), "the HALTED banner")
        assert banner.has_class("-alert")
        filled = orders_filled(engine)
        await press(pilot, "b")
        await pilot.pause(0.3)
        assert orders_filled(engine) == filled, "no order while HALTED"
        assert "trading HALTED" in log_text(app.desk.query_one("#signal-log", EventLog))


async def test_toggle_keys_send_their_commands(btc_files, tmp_path):
    app, engine, _ = make_desk(tmp_path, btc_files, 20.0)
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: book_live(engine), "the BTCUSDT book to be LIVE")
        header = app.desk.query_one(DeskHeader)
        assert engine.auto_trade is False
        await press(pilot, "a")
        assert engine.auto_trade is True
        await press(pilot, "a")
        assert engine.auto_trade is False
        assert "auto off" in plain(header)

        assert engine.training is True
        await press(pilot, "t")
        assert engine.training is False
        await wait_for(pilot, lambda: "training off" in plain(header), "the header to say training off")
        await wait_for(pilot, lambda: "training is OFF" in app.desk.query_one("#training-log", EventLog).waiting,
                       "the training log to say training is OFF")
        await press(pilot, "t")
        assert engine.training is True

        # No models are loaded here: each toggle reaches the engine, which says why it cannot apply.
        await press(pilot, "1", "2", "3")
        log = log_text(app.desk.query_one("#signal-log", EventLog))
        for model in ("cnn", "dqn", "cob"):
            assert f"cannot toggle {model}" in log

        step = engine.settings.trading.notional_step
        start = engine.order_notional
        await press(pilot, "plus")
        assert engine.order_notional == start + step
        for _ in range(10):
            await press(pilot, "minus")
        assert engine.order_notional == step, "never below one step"
        assert "never below one step" in log_text(app.desk.query_one("#signal-log", EventLog))

        # Pause stops the replay; resume continues it.
        await press(pilot, "space")
        assert engine.paused is True
        await pilot.pause(0.2)
        frozen = engine.messages
        await pilot.pause(0.6)
        assert engine.messages == frozen, "a paused replay must not progress"
        await wait_for(pilot, lambda: "PAUSED" in plain(header), "the header to say PAUSED")
        await press(pilot, "space")
        assert engine.paused is False
        await wait_for(pilot, lambda: engine.messages > frozen, "the replay to resume")


async def test_desk_renders_at_80x24_and_survives_resizes(btc_files, tmp_path):
    app, engine, _ = make_desk(tmp_path, btc_files, 50.0)
    async with app.run_test(size=SMALL) as pilot:
        await wait_for(pilot, lambda: book_live(engine) and len(engine.snapshot().seconds) > 5, "1s bars")
        desk = app.desk
        await pilot.pause(0.2)
        for sel in ("#header", "#main-chart", "#positions", "#signal-log"):
            w = desk.query_one(sel)
            assert w.display, sel
            r = w.region
            assert r.width > 10, (sel, r)
            assert r.height > 0, (sel, r)
            assert r.right <= SMALL[0], (sel, r)
            assert r.bottom <= SMALL[1], (sel, r)
        for sel in ("#mini-chart", "#sparks", "#models", "#training-log"):
            assert not desk.query_one(sel).display, f"{sel} is hidden on a small terminal"
        assert "BTC/USDT" in plain(desk.query_one(DeskHeader))

        # Resize in the middle of order entry: no crash, exactly the orders pressed.
        await press(pilot, "b")
        await pilot.resize_terminal(*WIDE)
        await wait_for(pilot, lambda: desk.query_one("#mini-chart").display, "the mini chart on a wide terminal")
        await wait_for(pilot, lambda: engine.portfolio.positions, "the buy to fill")
        await press(pilot, "s")
        await pilot.resize_terminal(*SMALL)
        await wait_for(pilot, lambda: not engine.portfolio.positions, "the sell to fill")
        await pilot.pause(0.3)
        assert orders_filled(engine) == 2
        assert len(engine.portfolio.closed) == 1
        assert app.screen is desk


async def test_quit_with_open_position_asks_first(btc_files, tmp_path):
    app, engine, _ = make_desk(tmp_path, btc_files, 50.0)
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: book_live(engine), "the BTCUSDT book to be LIVE")
        await press(pilot, "b")
        await wait_for(pilot, lambda: engine.portfolio.positions, "the buy to fill")
        await press(pilot, "q")
        assert isinstance(app.screen, ConfirmQuit)
        await press(pilot, "n")
        assert isinstance(app.screen, DeskScreen)
        assert app.is_running
        await press(pilot, "q")
        assert isinstance(app.screen, ConfirmQuit)
        await press(pilot, "y")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert app.return_code == 0


async def test_quit_when_flat_does_not_ask(btc_files, tmp_path):
    app, engine, _ = make_desk(tmp_path, btc_files, 50.0)
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: book_live(engine), "the BTCUSDT book to be LIVE")
        await press(pilot, "q")
        await wait_for(pilot, lambda: not app.is_running, "the app to exit")
    assert app.return_code == 0


async def test_waiting_panes_say_what_they_wait_for(btc_files, tmp_path):
    app, engine, _ = make_desk(tmp_path, btc_files, 50.0)
    # Paused before the first message: the engine has seen nothing at all.
    engine.submit(PauseReplay(True))
    engine.run_commands()
    async with app.run_test(size=WIDE) as pilot:
        desk = app.desk
        await wait_for(pilot, lambda: "waiting for market data" in plain(desk.query_one(DeskHeader)),
                       "the header to say it waits for market data")
        assert engine.messages == 0
        assert "waiting for the first 1m bar" in plain(desk.query_one(PriceChart))
        assert "waiting for the first 1s bars" in plain(desk.query_one(SecondsChart))
        assert "no models loaded" in plain(desk.query_one("#models-note"))
        assert not desk.query_one(ModelsPane).query_one(DataTable).display
        # No price yet: the order is not sent and the log says why.
        await press(pilot, "b")
        await wait_for(pilot, lambda: "BUY not sent: no market data" in log_text(desk.query_one("#signal-log", EventLog)),
                       "the log to say why the BUY was not sent")
        assert engine.fills == []
        assert engine.portfolio.positions == {}
        await wait_for(pilot, lambda: "PAUSED" in plain(desk.query_one(Banner)), "the PAUSED banner")


async def test_replay_finished_keeps_the_desk_open_and_orders_still_apply(btc_files, tmp_path):
    # As fast as possible, with the default paper latency: after the data ends market time
    # keeps moving with wall time, so the order still fills on the last book.
    app, engine, replay = make_desk(tmp_path, btc_files, None)
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: replay.done, "the replay to finish")
        await wait_for(pilot, lambda: "replay finished" in plain(app.desk.query_one(Banner)),
                       "the banner to say the replay finished")
        assert app.is_running
        assert "pause" not in app.desk.key_map(), "pause no longer applies"
        await press(pilot, "b")
        await wait_for(pilot, lambda: orders_filled(engine) == 1, "the buy after the end to fill")


async def test_keys_follow_the_settings_keymap(btc_files, tmp_path):
    app, engine, _ = make_desk(tmp_path, btc_files, 50.0, 'keys.buy="n"')
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: book_live(engine), "the BTCUSDT book to be LIVE")
        await wait_for(pilot, lambda: "n buys" in plain(app.desk.query_one("#open-positions")),
                       "the positions pane to name the buy key")
        await press(pilot, "b")
        await pilot.pause(0.3)  # market time passes: an order would have filled
        assert engine.fills == [], "b is no longer buy"
        await press(pilot, "n")
        await wait_for(pilot, lambda: orders_filled(engine) == 1, "the buy on n to fill")
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert app.desk.key_map()["buy"][0] == "n"
        assert any(key == "n" and text.startswith("buy") for key, text in app.screen.rows)
        await press(pilot, "escape")
        assert isinstance(app.screen, DeskScreen)


@pytest.mark.parametrize("size", [WIDE, SMALL])
async def test_help_lists_every_key(btc_files, tmp_path, size):
    app, _, _ = make_desk(tmp_path, btc_files, 50.0)
    async with app.run_test(size=size) as pilot:
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = app.desk.key_map()
        for name in ("buy", "sell", "close", "panic", "auto", "toggle_cnn", "toggle_dqn", "toggle_cob",
                     "training", "size_up", "size_down", "pause", "help", "quit"):
            assert name in keys, name
        await press(pilot, "escape")
        assert isinstance(app.screen, DeskScreen)


def test_every_models_pane_row_label_fits_its_column():
    too_long = [label for label, _, _ in PRIMARY if len(label) > LABEL_WIDTH]
    assert too_long == []


async def test_models_pane_shows_each_model_and_its_toggle(btc_files, tmp_path):
    # The real models (small preset, CPU), fresh: nothing loaded from a checkpoint.
    cfg = desk_settings(tmp_path, 'models.enabled=["cnn", "dqn", "cob"]', "models.load_checkpoints=false",
                        'models.device="cpu"')
    session = replay_session(cfg, btc_files, 5.0)
    engine, replay = session.engine, session.replay
    # The pane shows the models' status before any data; paused, no inference competes with the test.
    engine.submit(PauseReplay(True))
    engine.run_commands()
    app = DeskApp(cfg, engine, replay)
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: len(engine.snapshot().models) == 3, "three models in the snapshot")
        table = app.desk.query_one("#models-table", DataTable)
        await wait_for(pilot, lambda: table.display and len(table.columns) == 4, "a column per model")
        names = [model_name(dict(d), i) for i, d in enumerate(engine.snapshot().models)]
        assert [str(c.label) for c in list(table.columns.values())[1:]] == [n.upper() for n in names]
        cnn, dqn = names[0], names[1]
        assert table.get_cell("on", cnn).plain == "ON"
        assert table.get_cell("params", cnn).plain not in ("", "—")
        # fresh models have no record yet: the weights from settings
        assert table.get_cell("weight", cnn).plain == "0.70 ×1.00"
        assert table.get_cell("weight", dqn).plain == "0.15 ×1.00"
        await press(pilot, "1")
        assert engine.brain.enabled["cnn"] is False
        await wait_for(pilot, lambda: table.get_cell("on", cnn).plain == "off", "CNN shown off")
        assert table.get_cell("on", dqn).plain == "ON"
        await press(pilot, "1")
        assert engine.brain.enabled["cnn"] is True


async def test_model_keys_take_a_model_out_of_the_following_decisions(btc_files, tmp_path):
    """Key 3 switches the COB model off: the decisions after it carry no COB contribution;
    pressed again, the COB model is back in them."""
    cfg = desk_settings(tmp_path, 'models.enabled=["cnn", "dqn", "cob"]', "models.load_checkpoints=false",
                        'models.device="cpu"')
    session = replay_session(cfg, btc_files, 20.0)
    engine, replay = session.engine, session.replay
    decisions: list[DecisionMade] = []
    engine.bus.on(DecisionMade, decisions.append)
    app = DeskApp(cfg, engine, replay)

    def models_after(i: int) -> list[set[str]]:
        return [{c.model for c in d.contributions} for d in decisions[i:]]

    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: any("cob" in m for m in models_after(0)), "a decision with the COB model in it")
        await press(pilot, "3")
        await wait_for(pilot, lambda: engine.brain.enabled["cob"] is False, "the COB model off")
        off_from = len(decisions)  # every decision from here on came after the toggle ran
        await wait_for(pilot, lambda: len(decisions) >= off_from + 5, "five decisions with COB off")
        assert all("cob" not in m and m for m in models_after(off_from))
        await press(pilot, "3")
        await wait_for(pilot, lambda: engine.brain.enabled["cob"] is True, "the COB model on again")
        on_from = len(decisions)
        await wait_for(pilot, lambda: any("cob" in m for m in models_after(on_from)), "COB back in a decision")


async def test_order_in_flight_shows_as_working_until_it_fills(btc_files, tmp_path):
    # With paper latency an order reaches the simulated venue after 500 ms of market time;
    # while the replay is paused no market time passes, so it stays in flight.
    app, engine, _ = make_desk(tmp_path, btc_files, 50.0, "paper.latency_ms=500")
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: book_live(engine), "the BTCUSDT book to be LIVE")
        await press(pilot, "space")
        assert engine.paused
        await press(pilot, "b")
        open_pos = app.desk.query_one("#open-positions")
        await wait_for(pilot, lambda: "working BUY" in plain(open_pos), "the working order in the positions pane")
        assert engine.fills == []
        assert len(engine.snapshot().open_orders) == 1
        await press(pilot, "space")
        await wait_for(pilot, lambda: engine.portfolio.positions, "the order to fill once market time passes")
        await wait_for(pilot, lambda: "working" not in plain(open_pos), "the working line to go")
        assert orders_filled(engine) == 1

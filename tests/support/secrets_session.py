"""A whole session with canary API credentials in the environment, run in its own process
by ``test_secrets_canary.py``: CLI logging at DEBUG, careless debug lines and a traceback
that contain the secret, a live engine against the fake ccxt that answers with an auth
error echoing the key, the ledger, a settings dump, a snapshot, a model checkpoint, the
desk's screen, and finally an uncaught exception carrying the secret.

Usage: python -m tests.support.secrets_session DATA_DIR
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from engine import kernel
from engine.core import settings
from engine.core.clock import ReplayClock
from engine.core.events import Side, SubmitOrder
from engine.execution.ledger import Ledger, ledger_path
from tests.support.config import settings_for
from tests.support.fake_ccxt import FakeFactory
from tests.support.scripted_market import T0, Market
from tui.cli import setup_logging


class IdleDriver:
    async def run(self) -> None:
        await asyncio.sleep(3600)


async def until(cond: Callable[[], bool], timeout_s: float = 120.0) -> None:
    """Wait for ``cond`` (what the test checks afterwards), however slow a loaded box is."""
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def session(data_dir: Path) -> None:
    cfg = settings_for(data_dir, 'general.log_level="DEBUG"', 'models.enabled=["dqn"]', "trading.auto_trade=false")
    setup_logging(cfg, None, headless=True)  # what every tradedesk command does first
    log = logging.getLogger("tradedesk.canary")
    key, secret = os.environ["TRADEDESK_API_KEY"], os.environ["TRADEDESK_API_SECRET"]
    log.debug("environment at start: %s", dict(os.environ))  # the careless debug line
    log.debug(f"connecting with key {key} and secret {secret}")
    try:
        raise RuntimeError(f"signing failed for secret={secret}")
    except RuntimeError:
        log.exception("a traceback with the secret in it")

    factory = FakeFactory()
    executor = kernel.live_executor(cfg, exchange_factory=factory)
    ledger = Ledger(ledger_path(cfg.data_dir(), "live"), "live")
    clock = ReplayClock(T0)
    engine = kernel.build_engine(cfg, mode="live", clock=clock, ledger=ledger, executor=executor)
    kernel.attach_models(engine, cfg, deterministic=True)
    mkt = Market(engine, clock)
    mkt.start([("1999.50", "5")], [("2000.00", "5")])
    engine.confirm_live(engine.live_confirmation_phrase)
    await executor.start()
    engine.submit(SubmitOrder("ETHUSDT", Side.BUY, Decimal("0.1")))
    engine.run_commands()
    await until(lambda: bool(engine.fills))
    assert factory.exchange is not None
    factory.exchange.fail("create_order", "auth")
    engine.submit(SubmitOrder("ETHUSDT", Side.BUY, Decimal("0.1")))
    engine.run_commands()
    await until(lambda: engine.trading_state == "HALTED")
    print(f"trading {engine.trading_state}: {engine.risk.reason}", file=sys.stderr)

    (data_dir / "settings-dump.json").write_text(json.dumps(cfg.as_dict(), indent=1, default=str))
    (data_dir / "settings-dump.toml").write_text(settings.render_toml())
    (data_dir / "snapshot.txt").write_text(repr(engine.snapshot()) + "\n" + repr(engine.summary()) + "\n"
                                           + repr(executor) + repr(executor._credentials) + repr(vars(engine)))
    for key_name, agent in engine.brain.agents.items():
        from engine.learning.host import checkpoint_path

        agent.save(checkpoint_path(cfg, key_name))

    from tui.app import DeskApp

    app = DeskApp(cfg, engine, IdleDriver())
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.5)
        (data_dir / "desk.svg").write_text(app.export_screenshot())
    await executor.close()
    engine.shutdown()
    raise RuntimeError(f"an uncaught crash carrying the secret {secret}")


if __name__ == "__main__":
    asyncio.run(session(Path(sys.argv[1])))

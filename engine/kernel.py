"""The kernel: the one place a session is put together, for every mode.

A session is an engine with its clock, account (ledger and executor), models and feed
driver, built for one mode:

- :func:`live_session`: the desk on live public market data, paper orders by default or
  real ones (``live_orders``) through ccxt;
- :func:`replay_session`: recorded data on the recorded clock (``tradedesk replay`` and
  ``demo``), also at max speed as a backtest (``mode="backtest"``, what ``backtest``,
  ``bench`` and offline training use);
- :func:`build_engine`: an engine with no feed, driven by hand (benchmarks of ingest, the
  tests of the order path).

Everything is passed in through constructors or the engine's one explicit
:meth:`~engine.core.engine.Engine.attach_models`; no module outside this one constructs
an :class:`Engine`, a feed driver, an executor or a :class:`Brain`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.clock import Clock, ReplayClock, WallClock
from engine.core.engine import Engine
from engine.core.events import NS_PER_MS
from engine.core.settings import Settings
from engine.execution.executor import Executor
from engine.execution.ledger import Ledger, ledger_path, prune_run_ledgers, replay_ledger_path
from engine.execution.paper_executor import PaperExecutor
from engine.learning.brain import Brain
from engine.learning.host import ModelStore
from engine.market.capture import check_recordings
from engine.market.recorder import Recorder
from engine.runs.live_driver import QUEUE_SIZE, LiveFeedDriver
from engine.runs.replay import Replay


@dataclass
class Session:
    """A ready engine and what drives it. ``brain`` is None when every model is off."""

    engine: Engine
    brain: Brain | None
    driver: Replay | LiveFeedDriver | None = None

    @property
    def replay(self) -> Replay:
        if not isinstance(self.driver, Replay):
            raise TypeError("this session is not a replay")
        return self.driver

    @property
    def live(self) -> LiveFeedDriver:
        if not isinstance(self.driver, LiveFeedDriver):
            raise TypeError("this session is not live")
        return self.driver

    def close(self) -> None:
        """Flush and close: models closed (checkpoints saved), ledger closed. Safe twice."""
        self.engine.shutdown()


# ---------------------------------------------------------------------------- parts


def paper_executor(cfg: Settings) -> PaperExecutor:
    """The paper venue with the configured fees and latency (it walks the engine's books)."""
    p = cfg.paper
    return PaperExecutor(p.taker_fee, p.maker_fee, p.latency_ms * NS_PER_MS)


def live_executor(cfg: Settings, *, env: Mapping[str, str] | None = None, exchange_factory: Any = None) -> Executor:
    """Real orders through ccxt, keys from the environment (raises MissingCredentials without them)."""
    from engine.execution.live_executor import build_live_executor  # imports ccxt: only when asked

    return build_live_executor(cfg.live, env=env, exchange_factory=exchange_factory,
                               start_retry_s=cfg.exchange.backoff_base_s)


def build_engine(cfg: Settings, *, mode: str = "replay", clock: Clock | None = None, ledger: Ledger | None = None,
                 executor: Executor | None = None) -> Engine:
    """An engine with no feed and no models: a throwaway in-memory ledger and the paper
    venue unless given others, on a replay clock unless given one."""
    return Engine(cfg, clock if clock is not None else ReplayClock(), mode=mode,
                  ledger=ledger if ledger is not None else Ledger.memory(),
                  executor=executor if executor is not None else paper_executor(cfg))


def attach_models(engine: Engine, cfg: Settings, *, deterministic: bool, store: ModelStore | None = None,
                  frozen: bool = False, active_from_ns: int | None = None) -> Brain | None:
    """Load the models into ``engine`` unless every one is switched off in settings (then
    the desk says "no models loaded": no automatic decisions). ``store`` defaults to the
    desk's own checkpoints (as settings say); see :class:`Brain` for the rest."""
    if not cfg.models.enabled:
        return None
    brain = Brain(engine, cfg, deterministic=deterministic, store=store if store is not None else ModelStore.desk(cfg),
                  frozen=frozen, active_from_ns=active_from_ns,
                  shadow_venue=paper_executor(cfg) if cfg.learning.shadow_positions and not frozen else None)
    engine.attach_models(brain)
    return brain


# ---------------------------------------------------------------------------- sessions


def replay_session(cfg: Settings, paths: list[Path], speed: float | None = None, *, mode: str = "replay",
                   models: bool = True, deterministic: bool = True, linger: bool = False,
                   ledger: Ledger | None = None, executor: Executor | None = None,
                   store: ModelStore | None = None, frozen: bool = False,
                   active_from_ns: int | None = None) -> Session:
    """Recorded data through the full engine on the recorded clock.

    ``speed`` is a multiple of real time (None: as fast as possible); ``mode`` is
    ``replay`` or ``backtest``; ``deterministic`` waits for inference and training
    between messages (the same files and seed give the same run); ``linger`` keeps
    market time moving after the data ends (the desk). The ledger is a fresh per-run file
    unless one is given, so replays never restore into each other; when the run ends, run
    ledgers beyond the newest ``general.keep_run_ledgers`` are deleted.

    A file that is not a recording raises :class:`~engine.market.capture.CaptureError`
    (naming it and why) before anything is created.
    """
    recordings = check_recordings(paths)
    clock = ReplayClock()
    own_ledger = ledger is None
    if ledger is None:
        ledger = Ledger(replay_ledger_path(cfg.data_dir()), "replay", durable=False)
    engine = Engine(cfg, clock, mode=mode, ledger=ledger,
                    executor=executor if executor is not None else paper_executor(cfg))
    if own_ledger and ledger.path is not None:
        runs, keep = ledger.path.parent, cfg.general.keep_run_ledgers
        engine.on_shutdown(lambda: prune_run_ledgers(runs, keep), after_all=True)  # once this ledger is closed
    brain = attach_models(engine, cfg, deterministic=deterministic, store=store, frozen=frozen,
                          active_from_ns=active_from_ns) if models else None
    return Session(engine, brain, Replay(engine, paths, speed, clock, linger=linger, recordings=recordings))


def backtest_session(cfg: Settings, paths: list[Path], *, checkpoints_from: Path | None = None, frozen: bool = False,
                     active_from_ns: int | None = None) -> Session:
    """A backtest: the full engine at max speed, deterministic, with no side effects: an
    in-memory ledger, fresh models with the configured seed (or the checkpoints in
    ``checkpoints_from``, read-only), nothing saved (the caller saves elsewhere if asked)."""
    return replay_session(cfg, paths, None, mode="backtest", ledger=Ledger.memory(),
                          store=ModelStore(checkpoints_from, None), frozen=frozen, active_from_ns=active_from_ns)


def live_session(cfg: Settings, *, live_orders: bool = False, confirmed: bool = False, models: bool = True,
                 recorder: Recorder | None = None, max_seconds: float | None = None, until_closed: bool = False,
                 venue_exchanges: dict[str, Any] | None = None, queue_size: int = QUEUE_SIZE,
                 ledger: Ledger | None = None, executor: Executor | None = None,
                 clock: Clock | None = None) -> Session:
    """The live public market data feed into an engine with its account.

    ``live_orders`` trades through ccxt (keys from the environment) into ``live.db``,
    else paper into ``paper.db``; ``confirmed`` means the confirmation phrase was already
    typed (headless, on the terminal). ``ledger``/``executor`` replace the account (tests).
    """
    if executor is None:
        executor = live_executor(cfg) if live_orders else paper_executor(cfg)
    if ledger is None:
        ledger = Ledger(ledger_path(cfg.data_dir(), "live" if live_orders else "paper"), "live" if live_orders else "paper")
    engine = Engine(cfg, clock if clock is not None else WallClock(), mode="live", ledger=ledger,
                    executor=executor)
    if confirmed and engine.live_confirmation_required:
        engine.confirm_live(engine.live_confirmation_phrase)
    driver = LiveFeedDriver(engine, cfg, recorder=recorder, max_seconds=max_seconds, until_closed=until_closed,
                            venue_exchanges=venue_exchanges, queue_size=queue_size)
    brain = attach_models(engine, cfg, deterministic=False) if models else None
    return Session(engine, brain, driver)

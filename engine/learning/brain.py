"""The models in the engine: when they run, what they decide, and how they learn from
every closed position. The brain composes the pieces, each in its own module:

- :class:`~engine.learning.host.ModelHost`: the agents, device, on/off, checkpoints;
- :class:`~engine.learning.observation.Observer`: the inputs built from a symbol's state;
- :class:`~engine.learning.inference.InferenceThread`: the one inference thread;
- :class:`~engine.learning.policy.DecisionPolicy`: fusion, thresholds, max hold, exploration;
- :class:`~engine.learning.tracker.SignalPositionTracker`: who opened which position;
- :class:`~engine.learning.rewards.RewardCalculator` and
  :class:`~engine.learning.trainer.Trainer`: the reward and the training thread.

Cadence: the CNN on bar close of its timeframes, the COB model every
``models.cob_interval_ms`` of market time, the DQN and fusion every
``models.decision_interval_ms``; all only on a LIVE book. The due models run together in
one job on the inference thread. Replay and backtest wait for that job (and for pending
training) before the next message, so the same recording with the same seed gives the
same decisions; live, results come back to the event loop by callback.

Learning, in a training thread with a bounded queue (:class:`~engine.learning.trainer.Trainer`):

- an account position trains the models that called it, each scaled by its *credit*: how
  far its own signal pushed the decision that way (its signed score toward the trade, in
  [0, 1]; nothing for a HOLD or a signal against it; the DQN's epsilon draw fully for an
  exploratory entry). Manual trades are labelled examples for every model (credit 1);
- each model's own shadow positions (:mod:`engine.learning.shadow`) train it at full weight;
- HOLD's counterfactual (:mod:`engine.learning.probes`) teaches every model what a BUY and
  a SELL opened at a tick would have made;
- the CNN learns each perfect move (a confirmed swing extremum) the moment it is confirmed.

The engine calls :meth:`Brain.on_market`, :meth:`Brain.on_bar` and the status methods
(the :class:`~engine.core.ports.ModelsPort`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.core.events import (
    NS_PER_MS,
    NS_PER_S,
    Bar,
    BookState,
    ClosePosition,
    Contribution,
    DecisionMade,
    MarketData,
    ModelTrained,
    PositionClosed,
    PositionOpened,
    Side,
    SignalEmitted,
    SubmitOrder,
    TrainingSkipped,
)
from engine.core.settings import Settings
from engine.core.snapshot import LogLine, Marker
from engine.execution.executor import ExecReport, ExecutorPorts
from engine.learning.fusion import ModelSignal, cnn_score, signed_score
from engine.learning.host import MODEL_KEYS, ModelHost, ModelStore
from engine.learning.inference import InferenceThread, Results
from engine.learning.observation import Observer
from engine.learning.policy import DecisionPolicy
from engine.learning.probes import Probes, vwap_fill
from engine.learning.rewards import Reward, RewardCalculator, RewardParams, Volatility
from engine.learning.shadow import ExploreRule, ShadowBook
from engine.learning.tracker import OpenContext, SignalPositionTracker
from engine.learning.trainer import Trainer, TrainJob
from engine.runs import baselines
from engine.runs.baselines import Tape, TapePoint, Trades
from models.cnn.perfect_moves import Label, PerfectMoveLabeller
from models.common.schema import ACTIONS, CNN_TIMEFRAMES, HOLD, TIMEFRAMES

if TYPE_CHECKING:
    from engine.core.engine import Engine
    from engine.execution.paper_executor import PaperExecutor
    from engine.market.book import SyncedBook
    from engine.market.symbol_state import SymbolState
    from models.common.base_agent import Agent, Experience
    from models.common.inputs import ModelInputs, Prediction

ACTION_INDEX = {a: i for i, a in enumerate(ACTIONS)}
#: Tape marks (one a second) kept for the shadows' random-entry ranks.
TAPE_KEEP = 7200
SUMMARY_EVERY = 50  # counterfactual / perfect-move updates between two lines in the training log


@dataclass
class BrainCounters:
    decisions: int = 0
    actionable: int = 0
    executed: int = 0
    not_live_skips: int = 0
    no_model_skips: int = 0
    working_skips: int = 0  # actionable decisions not sent: an automatic order for the symbol was still working
    refused: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    training_jobs: int = 0
    training_dropped: int = 0
    training_off_skips: int = 0


class Brain:
    """The three models of one engine, from market data to decisions to learning on close."""

    def __init__(self, engine: Engine, cfg: Settings, *, deterministic: bool, store: ModelStore,
                 frozen: bool = False, active_from_ns: int | None = None,
                 shadow_venue: PaperExecutor | None = None) -> None:
        """``store``: where the models load from and save to; ``frozen``: evaluate only (no
        training, no exploration, the DQN greedy, no shadows or counterfactuals);
        ``active_from_ns``: no inference and no decisions before this market time (the
        warm-up of a walk-forward fold); ``shadow_venue``: the paper venue the models'
        shadow positions trade on (none: no shadow positions)."""
        self.engine = engine
        self.cfg = cfg
        self.deterministic = deterministic
        self.frozen = frozen
        self.active_from_ns = active_from_ns
        m = cfg.models
        self.host = ModelHost(cfg, self._log, store)
        if frozen:
            for agent in self.host.agents.values():
                agent.set_exploration(False)
        self.agents = self.host.agents
        self.observer = Observer(cfg)
        self.inference = InferenceThread(self.agents)
        self.policy = DecisionPolicy(cfg.with_overrides(["fusion.explore_rate=0"]) if frozen else cfg)
        for key, agent in self.agents.items():  # a loaded model brings its record
            self.policy.follow_record(key, agent.record())
        self.tracker = SignalPositionTracker()
        self.trainer = Trainer(self.agents, m.training_queue)
        params = RewardParams(**{k: cfg[f"rewards.{k}"] for k in RewardParams.__dataclass_fields__})
        self.rewarder = RewardCalculator(params)  # the account's positions
        self.vol = Volatility()
        self.regime_window_s = m.regime_window_s
        learn = cfg.learning
        self.shadows: dict[str, ShadowBook] = {}
        self.shadow_rewards: dict[str, RewardCalculator] = {}
        self._shadow_ranks: dict[str, tuple[int, float | None]] = {}
        self.shadow_venue = shadow_venue if (learn.shadow_positions and not frozen) else None
        if self.shadow_venue is not None:
            self.shadow_venue.bind(ExecutorPorts(on_report=self._on_shadow_report, now_ns=engine.clock.now_ns,
                                                 book_of=self._book_of))
            f = cfg.fusion
            rule = ExploreRule(f.explore_rate, f.explore_decay_trades, int(f.explore_min_hold_s * NS_PER_S))
            for i, key in enumerate(MODEL_KEYS):
                self.shadows[key] = ShadowBook(key, cfg, self.shadow_venue, bool(engine.portfolio.allow_short),
                                               cfg.general.seed + 300 + i, rule)
                self.shadow_rewards[key] = RewardCalculator(params)
            engine.watch_market(self._before_market)
        self.probes = None if frozen else Probes(learn.probe_every_s, learn.probe_hold_s, cfg.paper.taker_fee,
                                                 RewardCalculator(params), self.vol)
        self.labellers: dict[str, PerfectMoveLabeller] = {}
        if learn.online_perfect_moves and not frozen:
            for tf, th in cfg.training.swing_threshold.items():
                if tf in CNN_TIMEFRAMES:
                    self.labellers[tf] = PerfectMoveLabeller(th, tf)
        self._last_extremum: dict[str, int] = {}
        self.labels: deque[tuple[int, Label]] = deque(maxlen=2000)  # (known at, label), for the look-ahead guard
        self.tape = Tape(cfg.paper.taker_fee, bool(engine.portfolio.allow_short))  # for the shadows' random ranks
        self.updates: dict[str, dict[str, int]] = {k: {} for k in MODEL_KEYS}  # real updates by source
        self._rng = np.random.default_rng(cfg.general.seed + 202)
        self._session_start: int | None = None
        self.tf_weights = dict(cfg.fusion.tf_weights)
        self.signals: dict[str, ModelSignal] = {}
        self.counters = BrainCounters()
        self.signal_counts: dict[str, int] = dict.fromkeys(MODEL_KEYS, 0)
        self.decision_interval = m.decision_interval_ms * NS_PER_MS
        self.cob_interval = m.cob_interval_ms * NS_PER_MS
        self.signal_ttl = {"cnn": 180 * NS_PER_S, "cob": 3 * self.cob_interval, "dqn": 3 * self.decision_interval}
        self._next_decision = 0
        self._next_cob = 0
        self._cnn_due = False
        self._decision_id = 0
        self.rewards: list[Reward] = []
        self.decision_latency_ms: deque[float] = deque(maxlen=10_000)
        self.decision_latency_training_ms: deque[float] = deque(maxlen=10_000)  # while a train step ran
        self.last_dqn_explored = ""
        self._last_ckpt_at = -1
        self._closed = False
        engine.bus.on(PositionOpened, self._on_position_opened)
        engine.bus.on(PositionClosed, self._on_position_closed)

    # ------------------------------------------------------------------ the engine's port

    @property
    def device_label(self) -> str:
        return self.host.device_label

    @property
    def enabled(self) -> dict[str, bool]:
        return self.host.enabled

    def toggle(self, key: str, enabled: bool | None) -> None:
        if self.host.toggle(key, enabled) and not self.host.enabled[key.lower()]:
            self.signals.pop(key.lower(), None)  # takes effect at the next decision

    def status(self) -> list[dict[str, object]]:
        last = {k: f"{s.action} {s.confidence:.2f}" for k, s in self.signals.items()}
        out = self.host.status(self.signal_counts, last)
        for row in out:
            key = str(row["key"])
            book = self.shadows.get(key)
            if book is not None:
                r = book.record
                row.update(shadow_trades=r.trades, shadow_wins=r.wins, shadow_net_pnl=float(r.net_pnl),
                           shadow_rank=self.shadow_rank(key))
            row["updates"] = dict(self.updates.get(key, {}))
            if key in self.policy.weights:
                row.update(fusion_weight=self.policy.weights[key],
                           record_multiplier=self.policy.record_multipliers.get(key, 1.0))
        return out

    def shadow_rank(self, key: str) -> float | None:
        """Where the model's shadow record ranks among random entries with the same trades
        (percent of random draws it beats); recomputed only when the record changes."""
        book = self.shadows.get(key)
        if book is None or book.record.trades == 0 or len(self.tape.points) < 2:
            return None
        cached = self._shadow_ranks.get(key)
        if cached is not None and cached[0] == book.record.trades:
            return cached[1]
        r = book.record
        draws = baselines.random_draws(self.tape, Trades(tuple(r.durations_ns)), 200, self.cfg.general.seed)
        rank = baselines.rank_vs_random(float(r.net_pnl), draws)
        self._shadow_ranks[key] = (r.trades, rank)
        return rank

    def labels_known(self) -> list[tuple[int, Label]]:
        """The perfect moves confirmed so far, with the market time each became known."""
        return list(self.labels)

    def note(self) -> str:
        if not self.host.available():
            return "every model is off or failing: no automatic decisions"
        if not self.engine.auto_trade:
            return "automatic trading is off (press a): decisions are shown, not executed"
        untrained = [k.upper() for k in MODEL_KEYS if not self.host.trained(k)]
        if untrained:
            return f"untrained: {', '.join(untrained)} (they learn from every closed position)"
        return ""

    def training_steps(self) -> dict[str, int]:
        return self.host.training_steps()

    def reward_stats(self) -> dict[str, Any]:
        vals = [r.total for r in self.rewards]
        if not vals:
            return {"count": 0}
        return {"count": len(vals), "mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals),
                "last": vals[-1]}

    def summary_extra(self) -> dict[str, Any]:
        c = self.counters
        warming = []
        st = self.engine.symbols.get(self.engine.primary)
        if st is not None:
            warming = [tf for tf in CNN_TIMEFRAMES if st.features[tf].count < self.cfg.models.cnn_min_bars]
        lat = sorted([*self.decision_latency_ms, *self.decision_latency_training_ms])

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None

        return {
            **self.host.summary(),  # checkpoint saves, failures and refusals
            "signals": dict(self.signal_counts),
            "decisions_actionable": c.actionable,
            "explorations": self.policy.explorations,
            "fusion_weights": {k: round(w, 6) for k, w in self.policy.weights.items()},
            "record_multipliers": {k: round(v, 6) for k, v in self.policy.record_multipliers.items()},
            "attribution": {k: {kk: round(vv, 6) for kk, vv in v.items()}
                            for k, v in self.tracker.attribution.items()},
            "max_hold_closes": self.policy.max_hold_closes,
            "decisions_executed": c.executed,
            "decisions_skipped_not_live": c.not_live_skips,
            "decisions_skipped_no_model": c.no_model_skips,
            "decisions_skipped_order_working": c.working_skips,
            "predictions_refused": dict(c.refused),
            "model_failures": dict(c.failures),
            "cnn_warming_up": warming,
            "training_jobs": c.training_jobs,
            "training_dropped": c.training_dropped,
            "training_skipped_off": c.training_off_skips,
            "skipped_updates": {k: a.skipped_updates for k, a in self.agents.items()},
            "decision_latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "n": len(lat)},
            "updates": {k: dict(v) for k, v in self.updates.items()},
            "shadow": {k: {"trades": b.record.trades, "wins": b.record.wins, "explorations": b.record.explorations,
                           "net_pnl": str(b.record.net_pnl), "fees": str(b.record.fees),
                           "rank_vs_random": self.shadow_rank(k)} for k, b in self.shadows.items()},
            "counterfactuals": {"opened": self.probes.opened, "settled": self.probes.settled} if self.probes else {},
            "perfect_moves": {tf: sum(1 for _, lb in self.labels if lb.timeframe == tf) for tf in self.labellers},
            "models": {k: {"enabled": self.host.enabled[k], "preset": a.preset, "params": a.parameters,
                           "device": str(self.host.device)} for k, a in self.agents.items()},
        }

    def wait_for_training(self) -> None:
        """Block until every queued training job is done, then publish the results."""
        self.trainer.wait()
        self.drain_results()

    def close(self, save: bool = True) -> dict[str, str]:
        if self._closed:
            return {}
        self._closed = True
        self.trainer.close()
        self.drain_results()
        self.inference.close()
        return self.host.save_checkpoints() if save else {}

    # ------------------------------------------------------------------ cadence

    def on_bar(self, st: SymbolState, bar: Bar, row: np.ndarray) -> None:
        if st.symbol != self.engine.primary:
            return
        if bar.timeframe in CNN_TIMEFRAMES:
            self._cnn_due = True  # run once after this message, even if several timeframes closed
        close_ns = bar.open_time + TIMEFRAMES[bar.timeframe] * NS_PER_S
        if bar.timeframe == "1s":
            mid = st.book.mid()
            if mid is not None and st.book.state is BookState.LIVE:
                self.vol.add(close_ns, float(mid))
                if self.shadows:
                    self._mark_tape(st, close_ns)
        labeller = self.labellers.get(bar.timeframe)
        if labeller is not None and (self.active_from_ns is None or close_ns >= self.active_from_ns):
            for label in labeller.update(close_ns, float(bar.close)):
                self._learn_perfect_move(st, label, close_ns)

    def _mark_tape(self, st: SymbolState, ts: int) -> None:
        qty = self.engine.order_qty(st.symbol)
        if not qty:
            return
        buy, sell = vwap_fill(st, qty, True), vwap_fill(st, qty, False)
        mid = st.book.mid()
        if buy is None or sell is None or mid is None:
            return
        self.tape.add(TapePoint(ts, mid, qty, buy, sell))
        if len(self.tape.points) > 2 * TAPE_KEEP:  # a desk runs for days: keep the last hours
            self.tape = self.tape.window(self.tape.points[-TAPE_KEEP].ts, None)

    def on_market(self, st: SymbolState, ev: MarketData) -> None:
        if self.trainer.has_results:
            self.drain_results()
        if st.symbol != self.engine.primary:
            return
        now = ev.ts_recv
        if self.active_from_ns is not None and now < self.active_from_ns:
            return
        cob_due = now >= self._next_cob
        decision_due = now >= self._next_decision
        if not (cob_due or decision_due or self._cnn_due):
            return
        if st.book.state is not BookState.LIVE:
            if decision_due:
                self.counters.not_live_skips += 1  # nothing decides on a book that is not LIVE
                self._next_decision = now + self.decision_interval
            self._next_cob = max(self._next_cob, now + self.cob_interval) if cob_due else self._next_cob
            return
        if self.inference.busy:
            return  # live: the previous job is still running; never queue behind it
        enabled = self.host.enabled
        run = []
        # Live, a decision does not wait for the CNN (the slowest model, whose bars change
        # once a second): it runs in the job after, and the decision uses its last signal.
        # Replay keeps it in the decision's job, so a recording always gives the same decisions.
        defer_cnn = decision_due and not self.deterministic
        if self._cnn_due and enabled["cnn"] and not defer_cnn:
            run.append("cnn")
        if cob_due and enabled["cob"]:
            run.append("cob")
        if decision_due and enabled["dqn"]:
            run.append("dqn")
        self._cnn_due = self._cnn_due and defer_cnn and enabled["cnn"]
        if cob_due:
            self._next_cob = now + self.cob_interval
        if decision_due:
            self._next_decision = now + self.decision_interval
            if self._session_start is None:
                self._session_start = now
            for agent in self.agents.values():
                agent.on_market_time((now - self._session_start) / NS_PER_S)
        if not run and not decision_due:
            return
        if self.deterministic:
            self.trainer.wait()  # replay: train-on-close finishes before the next prediction
        inputs = self._inputs(st)
        t_recv = time.perf_counter()
        if self.deterministic:
            self._after_inference(st, self.inference.run_now(run, inputs), inputs, now, decision_due, t_recv)
        else:
            self.inference.run_later(run, inputs, lambda results: self._after_inference(
                st, results, inputs, now, decision_due, t_recv))

    def _inputs(self, st: SymbolState) -> ModelInputs:
        return self.observer.inputs(st, self.engine.portfolio.positions.get(st.symbol), self.engine.clock.now_ns())

    # ------------------------------------------------------------------ signals

    def _after_inference(self, st: SymbolState, results: Results, inputs: ModelInputs, now: int,
                         decision_due: bool, t_recv: float) -> None:
        from models.common.inputs import PredictionRefused

        for key, res in results.items():
            if isinstance(res, PredictionRefused):
                self.counters.refused[key] = self.counters.refused.get(key, 0) + 1
                self.signals.pop(key, None)
                continue
            if isinstance(res, Exception):
                self.counters.failures[key] = self.counters.failures.get(key, 0) + 1
                self.host.failed(key, str(res))
                self.signals.pop(key, None)
                continue
            self.host.recovered(key)
            self._record_signal(st, key, res, now)
        if decision_due:
            self._decide(st, inputs, now, t_recv)

    def _record_signal(self, st: SymbolState, key: str, p: Prediction, now: int) -> None:
        if key == "cnn" and p.per_tf:
            score = cnn_score({tf: (tp.confidence, tp.probs) for tf, tp in p.per_tf.items()}, self.tf_weights)
        else:
            score = signed_score(p.probs)
        action = ACTIONS[p.action]
        if key == "dqn":
            # The DQN's epsilon-greedy draw; the policy may take it as an exploratory entry.
            self.last_dqn_explored = action if p.explored else ""
        self.signals[key] = ModelSignal(key, action, p.confidence, score, now, p.probs)
        self.signal_counts[key] += 1
        detail = ""
        if p.per_tf:
            detail = " ".join(f"{tf}:{ACTIONS[tp.action][0]}" for tf, tp in p.per_tf.items())
        self.engine.bus.publish(SignalEmitted(key, st.symbol, action, p.confidence, now, detail))

    # ------------------------------------------------------------------ decisions

    def _decide(self, st: SymbolState, inputs: ModelInputs, now: int, t_recv: float) -> None:
        engine = self.engine
        available = self.host.available()
        fresh = {k: s for k, s in self.signals.items() if k in available and now - s.ts <= self.signal_ttl[k]}
        pos = engine.portfolio.positions.get(st.symbol)
        side = pos.side.value if pos is not None else None
        ctx = self.tracker.context(pos.position_id) if pos is not None else None
        decision = self.policy.decide(fresh, side, pos.entry_ts if pos is not None else None, now,
                                      self.last_dqn_explored, engine.portfolio.allow_short,
                                      trades=len(engine.portfolio.closed),
                                      exploring=ctx.exploring if ctx is not None else False)
        if decision is None:
            self.counters.no_model_skips += 1
            self._learn_from_tick(st, inputs, fresh, now)
            return
        action, fused, note = decision.action, decision.fused, decision.note
        self._decision_id += 1
        did = self._decision_id
        self.counters.decisions += 1
        why_not = ""
        executed = False
        if action != "HOLD":
            self.counters.actionable += 1
            if not engine.auto_trade:
                why_not = "auto-trading off"
            elif engine.trading_state != "ACTIVE" and action != "CLOSE":
                why_not = f"trading {engine.trading_state}"
            elif (working := engine.working_order(st.symbol, "auto")) is not None:
                # One automatic order per symbol at a time: the position it is meant to change
                # is not known until it resolves (paper latency, a slow exchange).
                why_not = f"automatic order {working} still working"
                self.counters.working_skips += 1
            else:
                executed, why_not = self._execute(st, action, did, fused.contributions, inputs, fresh, note)
        if ctx is not None and pos is not None:
            # The models that hold this account position: each later decision (kept or closed) is theirs too.
            step = 1 if action == "HOLD" or not executed else ACTION_INDEX[pos.side.opposite().value]
            for key, exp in ctx.experiences.items():
                self.agents[key].extend_experience(exp, inputs, step)
        lat = (time.perf_counter() - t_recv) * 1e3
        (self.decision_latency_training_ms if self.trainer.training_now else self.decision_latency_ms).append(lat)
        engine.bus.publish(DecisionMade(did, st.symbol, action, fused.score, now, fused.contributions, executed,
                                        why_not))
        if action != "HOLD":
            self.counters.executed += executed
            price = float(st.book.mid() or 0)
            side_marker = action if action != "CLOSE" else (Side.SELL.value if side == "BUY" else Side.BUY.value)
            engine.signal_markers.append(Marker(now, price, side_marker, executed))
            parts = " ".join(f"{c.model.upper()}:{c.action[0]}{c.confidence:.2f}×{c.weight:.2f}"
                             for c in fused.contributions)
            outcome = "executed" if executed else f"not executed: {why_not}"
            tag = f" ({note})" if note else ""
            self._log("fusion", f"{action}{tag} score {fused.score:+.3f} [{parts}] {outcome}",
                      "good" if executed else "info")
        self._learn_from_tick(st, inputs, fresh, now)

    def _credits(self, action: str, fresh: dict[str, ModelSignal], note: str) -> dict[str, float]:
        """How far each model's own signal pushed toward ``action``: its signed score that way, in [0, 1]."""
        d = 1.0 if action == "BUY" else -1.0
        credits = {k: max(0.0, min(1.0, d * s.score)) for k, s in fresh.items()}
        if note == "explore":
            credits["dqn"] = 1.0  # the DQN's epsilon draw opened it: the outcome is its to learn from
        return credits

    def _execute(self, st: SymbolState, action: str, did: int, contribs: tuple[Contribution, ...],
                 inputs: ModelInputs, fresh: dict[str, ModelSignal], note: str) -> tuple[bool, str]:
        """Send the decision's order: (sent past the risk gate, why not). Fills may follow."""
        engine = self.engine
        if action == "CLOSE":
            result = engine.execute(ClosePosition(st.symbol, "auto", did))
            return result.sent, result.reason
        qty = engine.order_qty(st.symbol)
        if qty is None or qty <= 0:
            return False, "no price for sizing"
        act = ACTION_INDEX[action]
        credits = self._credits(action, fresh, note)
        regime = self.vol.regime(engine.clock.now_ns(), self.regime_window_s)
        experiences = {k: self.agents[k].begin_experience(inputs, act, regime=regime)
                       for k, c in credits.items() if c > 0 and k in self.agents}
        self.tracker.expect(OpenContext(did, inputs, contribs, act, experiences, credits,
                                        exploring=note == "explore"))
        result = engine.execute(SubmitOrder(st.symbol, Side(action), qty, "auto", did))
        if not result.sent:
            self.tracker.forget(did)
        return result.sent, result.reason

    # ------------------------------------------------------------------ shadows, counterfactuals, labels

    def _learn_from_tick(self, st: SymbolState, inputs: ModelInputs, fresh: dict[str, ModelSignal], now: int) -> None:
        """Once per decision tick: each model's shadow book acts on its own signal; the
        counterfactuals whose hold is over teach every model; a new one is opened."""
        if self.frozen:
            return
        qty = self.engine.order_qty(st.symbol) if (self.shadows or self.probes) else None
        if self.shadows:
            regime = self.vol.regime(now, self.regime_window_s)
            for key, book in self.shadows.items():
                sig = fresh.get(key)
                if sig is None:
                    continue
                agent = self.agents[key]

                def begin(a: int, agent: Agent = agent) -> Experience:
                    return agent.begin_experience(inputs, a, regime=regime)

                def extend(exp: Experience, a: int, agent: Agent = agent) -> None:
                    agent.extend_experience(exp, inputs, a)

                book.step(st.symbol, sig.score, self._explore_side(key, sig), qty, now, begin, extend)
        if self.probes is None:
            return
        on = self.host.available()
        for settled in self.probes.settle(now, st):
            for key in on:
                self._submit(TrainJob(key, "counterfactual", max(settled.rewards), inputs=settled.probe.inputs,
                                      rewards=settled.rewards))
        self.probes.maybe_open(now, st, qty, inputs)

    def _explore_side(self, key: str, sig: ModelSignal) -> str:
        """A model's own exploratory side: the DQN's epsilon draw, a draw from the COB's policy."""
        if key == "dqn":
            return self.last_dqn_explored
        if key == "cob" and sig.probs is not None:
            a = int(self._rng.choice(3, p=np.asarray(sig.probs) / sum(sig.probs)))
            return ACTIONS[a]
        return ""

    def _book_of(self, symbol: str) -> SyncedBook | None:
        st = self.engine.symbols.get(symbol)
        return st.book if st is not None else None

    def _before_market(self, ev: MarketData) -> None:
        venue = self.shadow_venue
        if venue is not None and venue.busy():
            self._on_shadow_reports(venue.poll(self.engine.clock.now_ns()))

    def _on_shadow_report(self, rep: ExecReport) -> None:
        self._on_shadow_reports([rep])

    def _on_shadow_reports(self, reports: list[ExecReport]) -> None:
        for key, book in self.shadows.items():
            mine = [r for r in reports if book.owns(r.client_id)]
            if not mine:
                continue
            for ev, exp, exploring in book.on_reports(mine):
                reward = self.shadow_rewards[key](ev, self.vol.over(ev.entry_ts, ev.exit_ts))
                self.engine.journal_shadow(key, ev, exploring)
                self.engine.journal_reward(ev, reward, owner=key)
                tag = " explore" if exploring else ""
                self.engine.training_log.append(LogLine(ev.exit_ts, key, f"{key.upper()} shadow{tag} #{ev.position_id} "
                                                        f"PnL {ev.realised_pnl:+.4f} → reward {reward.total:+.3f}"))
                if not exploring:  # its own call: its record, which its fusion weight follows
                    agent = self.agents[key]
                    agent.note_return(reward.pnl_frac)
                    self.policy.follow_record(key, agent.record())
                if exp is not None:
                    self._submit(TrainJob(key, "shadow", reward.total, 1.0, ev.position_id, experience=exp))

    def _learn_perfect_move(self, st: SymbolState, label: Label, known_ns: int) -> None:
        """A swing extremum just confirmed: BUY at the trough, SELL at the peak, and HOLD
        halfway from the previous extremum, on the bars as they were then."""
        self.labels.append((known_ns, label))
        tf = label.timeframe
        head = CNN_TIMEFRAMES.index(tf)
        previous = self._last_extremum.get(tf)
        self._last_extremum[tf] = label.extremum_time
        samples = [(label.extremum_time, label.action)]
        if previous is not None and label.extremum_time > previous:
            samples.append(((previous + label.extremum_time) // 2, HOLD))
        for key in self.host.available():
            if not self.agents[key].learns_from_labels:
                continue
            for t, action in samples:
                inputs = self.observer.bars_at(st, t)
                if inputs is not None:
                    self._submit(TrainJob(key, "label", 0.0, 1.0, inputs=inputs, timeframe=head, action=action))

    def _submit(self, job: TrainJob) -> None:
        if self.trainer.submit(job):
            self.counters.training_jobs += 1
        else:
            self.counters.training_dropped += 1  # never block ingest for training

    # ------------------------------------------------------------------ learning on close

    def _on_position_opened(self, ev: PositionOpened) -> None:
        if ev.decision_id is not None:
            self.tracker.opened(ev.position_id, ev.decision_id)
            return
        st = self.engine.symbols.get(ev.symbol)
        if st is None or st.book.state is not BookState.LIVE:
            return
        # A manual trade: the models learn from it as a labelled example, each at full credit.
        on = [k for k in MODEL_KEYS if self.host.enabled[k]]
        contribs = tuple(Contribution(k, ev.side.value, 1.0, 1.0 / len(on)) for k in on)
        inputs, act = self._inputs(st), ACTION_INDEX[ev.side.value]
        regime = self.vol.regime(ev.ts, self.regime_window_s)
        experiences = {k: self.agents[k].begin_experience(inputs, act, regime=regime) for k in on}
        self.tracker.track(ev.position_id, OpenContext(ev.decision_id, inputs, contribs, act, experiences,
                                                       dict.fromkeys(on, 1.0), manual=True))

    def _on_position_closed(self, ev: PositionClosed) -> None:
        ctx = self.tracker.closed(ev)
        if ctx is None:
            return
        reward = self.rewarder(ev, self.vol.over(ev.entry_ts, ev.exit_ts))
        self.rewards.append(reward)
        comp = " ".join(f"{k}={v:+.3f}" for k, v in reward.components.items())
        self.engine.training_log.append(LogLine(ev.exit_ts, "reward", f"#{ev.position_id} PnL "
                                                f"{ev.realised_pnl:+.4f} → reward {reward.total:+.3f} ({comp})"))
        self.engine.journal_reward(ev, reward)
        credited = {k: c for k, c in ctx.credits.items() if c > 0 and k in ctx.experiences}
        if not self.engine.training or self.frozen:
            self.counters.training_off_skips += 1
            why = "frozen for evaluation" if self.frozen else "training off"
            for key in credited:
                self.engine.bus.publish(TrainingSkipped(key, why, reward.total, ev.position_id, ev.exit_ts))
            return
        for key, credit in credited.items():
            self._submit(TrainJob(key, "account", reward.total, credit, ev.position_id,
                                  experience=ctx.experiences[key]))

    def drain_results(self) -> None:
        """Publish finished training steps (on the engine's loop, never from the trainer)."""
        for r in self.trainer.drain():
            ts = self.engine.clock.now_ns()
            where = f" #{r.position_id}" if r.position_id is not None else f" ({r.source})"
            if r.loss is None:
                why = r.skipped or "nothing to learn yet"
                if r.source in ("account", "shadow"):  # counterfactuals and labels are too many to list
                    self.engine.training_log.append(LogLine(ts, r.model, f"{r.model.upper()}{where} reward "
                                                            f"{r.reward:+.3f}: no update ({why})"))
                self.engine.bus.publish(TrainingSkipped(r.model, why, r.reward, r.position_id, ts, r.source))
                continue
            counts = self.updates.setdefault(r.model, {})
            counts[r.source] = counts.get(r.source, 0) + 1
            if r.source in ("account", "shadow"):
                self.engine.training_log.append(LogLine(ts, r.model, f"{r.model.upper()}{where} reward "
                                                        f"{r.reward:+.3f}×{r.scale:.2f} loss {r.loss:.4f} step {r.step} "
                                                        f"({r.wall_ms:.1f} ms)"))
            elif counts[r.source] == 1 or counts[r.source] % SUMMARY_EVERY == 0:
                # Too many to list one by one: the first, then every SUMMARY_EVERY-th, so the pane shows
                # that (and how much) a model learns before any position of its own has closed.
                what = "counterfactual probes" if r.source == "counterfactual" else "confirmed perfect moves"
                self.engine.training_log.append(LogLine(ts, r.model, f"{r.model.upper()} {counts[r.source]} "
                                                        f"update(s) from {what}, loss {r.loss:.4f} step {r.step}"))
            self.engine.bus.publish(ModelTrained(r.model, r.step, r.loss, r.reward, r.position_id, ts, r.scale,
                                                 r.source))
        every = self.cfg.models.checkpoint_every_closes
        if every and self.rewards and len(self.rewards) % every == 0 and self._last_ckpt_at != len(self.rewards):
            self._last_ckpt_at = len(self.rewards)
            self.host.save_checkpoints()

    def _log(self, source: str, text: str, level: str = "info") -> None:
        self.engine.log.append(LogLine(self.engine.clock.now_ns(), source, text, level))

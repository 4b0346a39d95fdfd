"""The models in the engine: cadences, inputs, inference thread, fusion, decisions,
and learning from every closed position.

- CNN on bar close of its timeframes, COB every ``models.cob_interval_ms`` of market
  time, DQN and fusion every ``models.decision_interval_ms``; all only on a LIVE book.
- Inputs are built once per tick of the cadence and the due models run together in
  one job on the single inference thread (``torch.set_num_threads(1)`` there).
- Replay and backtest wait for that job (and for pending training) before the next
  message, so the same recording with the same seed gives the same decisions. Live,
  results come back to the event loop by callback and the feed never waits.
- When a position closes, its reward trains every model that contributed to opening it,
  scaled by the model's fusion weight, in a training thread with a bounded queue.

The engine calls :meth:`Brain.on_market`, :meth:`Brain.on_bar` and the status methods;
the models are reached only through :mod:`models.registry`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
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
)
from engine.core.settings import Settings
from engine.core.snapshot import LogLine, Marker
from engine.learning.fusion import ModelSignal, cnn_score, decide, fuse, signed_score
from engine.learning.rewards import Reward, RewardCalculator, RewardParams
from engine.market.features import book_features
from models.common.schema import ACTIONS, CNN_TIMEFRAMES, COB_EXTRA, COB_LEVELS, DQN_BARS, WINDOW

if TYPE_CHECKING:
    from engine.core.engine import Engine
    from engine.market.symbol_state import SymbolState
    from models.common.base_agent import Agent, Experience
    from models.common.inputs import ModelInputs, Prediction

log = logging.getLogger(__name__)

MODEL_KEYS = ("cnn", "dqn", "cob")
ACTION_INDEX = {a: i for i, a in enumerate(ACTIONS)}


@dataclass
class OpenContext:
    """What the models saw when a position was opened (SignalPositionTracker's record)."""

    decision_id: int | None
    inputs: ModelInputs
    contributions: tuple[Contribution, ...]
    action: int  # the position's side as an action index
    experiences: dict[str, Experience]  # per model, begun when the decision was made
    manual: bool = False


@dataclass
class TrainResult:
    model: str
    position_id: int
    reward: float
    scale: float
    loss: float | None
    step: int
    wall_ms: float
    skipped: str = ""


@dataclass
class BrainCounters:
    decisions: int = 0
    actionable: int = 0
    executed: int = 0
    not_live_skips: int = 0
    no_model_skips: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    training_jobs: int = 0
    training_dropped: int = 0
    training_off_skips: int = 0


def checkpoint_path(cfg: Settings, key: str) -> Path:
    return cfg.data_dir() / "checkpoints" / f"{key}-{cfg.models.preset}.pt"


class Brain:
    """Hosts the three agents for one engine."""

    def __init__(self, engine: Engine, cfg: Settings, *, deterministic: bool) -> None:
        import torch

        from models.common.base_agent import seed_everything
        from models.common.device import device_description, select_device
        from models.registry import AGENTS

        self.engine = engine
        self.cfg = cfg
        self.deterministic = deterministic
        m = cfg.models
        self.device = select_device(m.device)
        engine.device = device_description(self.device)
        seed_everything(cfg.general.seed)
        torch.set_num_threads(1)  # inference and training each get one core (BENCH.md)
        self.agents: dict[str, Agent] = {}
        for i, key in enumerate(MODEL_KEYS):
            self.agents[key] = AGENTS[key](preset=m.preset, device=self.device, seed=cfg.general.seed + i,
                                           name=key.upper())
        self.enabled = {k: k in m.enabled for k in MODEL_KEYS}
        self.loaded: dict[str, str] = {}
        self.failing: dict[str, str] = {}
        if m.load_checkpoints:
            self._load_checkpoints()
        self.weights = dict(cfg.fusion.weights)
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
        self._bars_key: tuple[object, ...] = ()
        self._bars_cache: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.empty(0), np.empty(0), np.empty(0))
        self._decision_id = 0
        # Contexts of automatic orders on their way (fills may come later: latency model),
        # keyed by decision id; bounded so orders that never fill cannot pile up.
        self._opening: dict[int, OpenContext] = {}
        self.tracker: dict[int, OpenContext] = {}
        self.attribution: dict[str, dict[str, float]] = {}  # model -> PnL share of the positions it opened
        self.rewarder = RewardCalculator(RewardParams(**{k: cfg[f"rewards.{k}"] for k in RewardParams.__dataclass_fields__}))
        self.rewards: list[Reward] = []
        self.training_steps_total: dict[str, int] = dict.fromkeys(MODEL_KEYS, 0)
        self.decision_latency_ms: deque[float] = deque(maxlen=10_000)
        self.decision_latency_training_ms: deque[float] = deque(maxlen=10_000)  # while a train step ran
        self.train_wall_ms: deque[float] = deque(maxlen=10_000)
        self._training_now = False
        self.last_dqn_explored = ""
        self._explore_rng = np.random.default_rng(cfg.general.seed + 101)
        self.explorations = 0
        self.max_hold_closes = 0
        self._inference = ThreadPoolExecutor(1, thread_name_prefix="inference",
                                             initializer=torch.set_num_threads, initargs=(1,))
        self._train_q: queue.Queue[tuple[str, OpenContext, Reward, float, int] | None] = queue.Queue(
            maxsize=m.training_queue)
        self._results: deque[TrainResult] = deque()
        self._trainer = threading.Thread(target=self._train_loop, name="trainer", daemon=True)
        self._trainer.start()
        self._inflight: Future[Any] | None = None
        self._closed = False
        engine.bus.on(PositionOpened, self._on_position_opened)
        engine.bus.on(PositionClosed, self._on_position_closed)

    # ------------------------------------------------------------------ checkpoints

    def _load_checkpoints(self) -> None:
        from models.common.checkpoint import CheckpointError

        for key, agent in self.agents.items():
            path = checkpoint_path(self.cfg, key)
            if not path.exists() and not path.with_suffix(".prev.pt").exists():
                continue
            try:
                info = agent.load(path)
            except CheckpointError as exc:
                self._log("models", f"{key.upper()} checkpoint refused, starting untrained: {exc}", "error")
                continue
            self.loaded[key] = info["path"]
            note = " (previous checkpoint: the latest was refused)" if info["fallback"] else ""
            self._log("models", f"{key.upper()} loaded {Path(info['path']).name}, step {agent.training_steps}{note}")

    def save_checkpoints(self) -> dict[str, str]:
        """Save every model that has trained; a model with non-finite weights is not saved."""
        saved: dict[str, str] = {}
        for key, agent in self.agents.items():
            if agent.training_steps == 0 and key not in self.loaded:
                continue  # an untrained model is not worth a file
            try:
                saved[key] = str(agent.save(checkpoint_path(self.cfg, key)))
            except Exception as exc:  # non-finite weights, disk full: keep the previous file
                self._log("models", f"{key.upper()} checkpoint not saved: {exc}", "error")
        return saved

    def close(self, save: bool = True) -> dict[str, str]:
        if self._closed:
            return {}
        self._closed = True
        self._train_q.put(None)
        self._trainer.join(timeout=60)
        self.drain_results()
        self._inference.shutdown(wait=True)
        return self.save_checkpoints() if save and self.cfg.models.save_checkpoints else {}

    # ------------------------------------------------------------------ toggles & status

    def toggle(self, key: str, enabled: bool | None) -> None:
        key = key.lower()
        if key not in self.agents:
            self._log("models", f"unknown model {key!r} (known: {', '.join(MODEL_KEYS)})", "warn")
            return
        self.enabled[key] = (not self.enabled[key]) if enabled is None else enabled
        self.agents[key].enabled = self.enabled[key]
        if not self.enabled[key]:
            self.signals.pop(key, None)  # takes effect at the next decision
        self._log("models", f"{key.upper()} {'ON' if self.enabled[key] else 'OFF'}")

    def status(self) -> list[dict[str, object]]:
        out = []
        for key, agent in self.agents.items():
            s = agent.status()
            trained = agent.training_steps > 0 or key in self.loaded
            s.update(key=key, enabled=self.enabled[key], state="trained" if trained else "untrained",
                     failing=self.failing.get(key, ""), signals=self.signal_counts[key],
                     checkpoint=self.loaded.get(key))
            sig = self.signals.get(key)
            if sig is not None:
                s["signal"] = f"{sig.action} {sig.confidence:.2f}"
            out.append(s)
        return out

    def note(self) -> str:
        avail = [k for k in MODEL_KEYS if self.enabled[k] and k not in self.failing]
        if not avail:
            return "every model is off or failing: no automatic decisions"
        if not self.engine.auto_trade:
            return "automatic trading is off (press a): decisions are shown, not executed"
        untrained = [k.upper() for k in MODEL_KEYS if self.agents[k].training_steps == 0 and k not in self.loaded]
        if untrained:
            return f"untrained: {', '.join(untrained)} (they learn from every closed position)"
        return ""

    def training_steps(self) -> dict[str, int]:
        return {k: a.training_steps for k, a in self.agents.items()}

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
            "signals": dict(self.signal_counts),
            "decisions_actionable": c.actionable,
            "explorations": self.explorations,
            "attribution": {k: {kk: round(vv, 6) for kk, vv in v.items()} for k, v in self.attribution.items()},
            "max_hold_closes": self.max_hold_closes,
            "decisions_executed": c.executed,
            "decisions_skipped_not_live": c.not_live_skips,
            "decisions_skipped_no_model": c.no_model_skips,
            "predictions_refused": dict(c.refused),
            "model_failures": dict(c.failures),
            "cnn_warming_up": warming,
            "training_jobs": c.training_jobs,
            "training_dropped": c.training_dropped,
            "training_skipped_off": c.training_off_skips,
            "skipped_updates": {k: a.skipped_updates for k, a in self.agents.items()},
            "decision_latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "n": len(lat)},
            "models": {k: {"enabled": self.enabled[k], "preset": a.preset, "params": a.parameters,
                           "device": str(self.device)} for k, a in self.agents.items()},
        }

    # ------------------------------------------------------------------ engine hooks

    def on_bar(self, st: SymbolState, bar: Bar, row: np.ndarray) -> None:
        if bar.timeframe in CNN_TIMEFRAMES and st.symbol == self.engine.primary:
            self._cnn_due = True  # run once after this message, even if several timeframes closed

    def on_market(self, st: SymbolState, ev: MarketData) -> None:
        if self._results:
            self.drain_results()
        if st.symbol != self.engine.primary:
            return
        now = ev.ts_recv
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
        if self._inflight is not None and not self._inflight.done():
            return  # live: the previous job is still running; never queue behind it
        run = []
        if self._cnn_due and self.enabled["cnn"]:
            run.append("cnn")
        if cob_due and self.enabled["cob"]:
            run.append("cob")
        if decision_due and self.enabled["dqn"]:
            run.append("dqn")
        self._cnn_due = False
        if cob_due:
            self._next_cob = now + self.cob_interval
        if decision_due:
            self._next_decision = now + self.decision_interval
        if not run and not decision_due:
            return
        if self.deterministic:
            self._train_q.join()  # replay: train-on-close finishes before the next prediction
        inputs = self.build_inputs(st)
        t_recv = time.perf_counter()
        if self.deterministic:
            results = self._inference.submit(self._predict_all, run, inputs).result()
            self._after_inference(st, results, inputs, now, decision_due, t_recv)
        else:
            fut = self._inference.submit(self._predict_all, run, inputs)
            self._inflight = fut
            loop = asyncio.get_running_loop()

            def done(f: Future[Any]) -> None:
                loop.call_soon_threadsafe(self._after_inference, st, f.result(), inputs, now, decision_due, t_recv)

            fut.add_done_callback(done)

    # ------------------------------------------------------------------ inference

    def build_inputs(self, st: SymbolState) -> ModelInputs:
        from models.common.inputs import ModelInputs

        # Bar windows change only when a bar closes: reuse them until one does (they are
        # read-only, so the contexts of open positions can share them safely).
        key = (st.symbol, *(st.features[tf].count for tf in CNN_TIMEFRAMES))
        if self._bars_key != key:
            min_bars = self.cfg.models.cnn_min_bars
            bars = np.stack([st.features[tf].window(WINDOW) for tf in CNN_TIMEFRAMES])
            valid = np.array([st.features[tf].count >= min_bars for tf in CNN_TIMEFRAMES], dtype=bool)
            last_1m = st.features["1m"].window(DQN_BARS).ravel()
            for a in (bars, valid, last_1m):
                a.flags.writeable = False
            self._bars_key, self._bars_cache = key, (bars, valid, last_1m)
        bars, valid, last_1m = self._bars_cache
        book = st.book.book
        flow = st.ticks.flow.stats(st.last_event_ns)
        cob = book_features(book.top_bids(COB_LEVELS), book.top_asks(COB_LEVELS), flow)
        dqn = np.concatenate([last_1m, cob[-len(COB_EXTRA):],
                              self._position_state(st)]).astype(np.float32)
        return ModelInputs(bars=bars, bars_valid=valid, cob=cob, dqn_state=dqn)

    def _position_state(self, st: SymbolState) -> np.ndarray:
        pos = self.engine.portfolio.positions.get(st.symbol)
        if pos is None:
            return np.zeros(3, np.float32)
        mark = st.book.mid() or pos.entry_price
        notional = pos.entry_price * pos.qty
        upnl = float(pos.unrealised(mark) / notional) if notional else 0.0
        held_s = max(self.engine.clock.now_ns() - pos.entry_ts, 0) / NS_PER_S
        hold = min(held_s / max(self.cfg.rewards.free_hold_s, 1.0), 2.0)
        return np.array([pos.side.sign, upnl, hold], np.float32)

    def _predict_all(self, run: list[str], inputs: ModelInputs) -> dict[str, Prediction | Exception]:
        """Runs on the inference thread: every due model on the same inputs."""
        out: dict[str, Prediction | Exception] = {}
        for key in run:
            try:
                out[key] = self.agents[key].predict(inputs)
            except Exception as exc:  # refused (warming up, non-finite) or a real failure
                out[key] = exc
        return out

    def _after_inference(self, st: SymbolState, results: dict[str, Any], inputs: ModelInputs, now: int,
                         decision_due: bool, t_recv: float) -> None:
        from models.common.inputs import PredictionRefused

        self._inflight = None
        for key, res in results.items():
            if isinstance(res, PredictionRefused):
                self.counters.refused[key] = self.counters.refused.get(key, 0) + 1
                self.signals.pop(key, None)
                continue
            if isinstance(res, Exception):
                self.counters.failures[key] = self.counters.failures.get(key, 0) + 1
                if key not in self.failing:
                    self._log("models", f"{key.upper()} failed and drops out of fusion: {res}", "error")
                self.failing[key] = str(res)
                self.signals.pop(key, None)
                continue
            self.failing.pop(key, None)
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
            # The DQN's epsilon-greedy draw; fusion may take it as an exploratory entry.
            self.last_dqn_explored = action if p.explored else ""
        self.signals[key] = ModelSignal(key, action, p.confidence, score, now)
        self.signal_counts[key] += 1
        detail = ""
        if p.per_tf:
            detail = " ".join(f"{tf}:{ACTIONS[tp.action][0]}" for tf, tp in p.per_tf.items())
        self.engine.bus.publish(SignalEmitted(key, st.symbol, action, p.confidence, now, detail))

    # ------------------------------------------------------------------ decisions

    def _decide(self, st: SymbolState, inputs: ModelInputs, now: int, t_recv: float) -> None:
        engine = self.engine
        fresh = {k: s for k, s in self.signals.items()
                 if self.enabled[k] and k not in self.failing and now - s.ts <= self.signal_ttl[k]}
        fused = fuse(fresh, self.weights)
        if fused is None:
            self.counters.no_model_skips += 1
            return
        pos = engine.portfolio.positions.get(st.symbol)
        side = pos.side.value if pos is not None else None
        f = self.cfg.fusion
        action = decide(fused.score, side, f.open_threshold, f.close_threshold, engine.portfolio.allow_short)
        note = ""
        if action == "HOLD" and pos is not None and f.max_hold_s > 0 and \
                now - pos.entry_ts > f.max_hold_s * NS_PER_S:
            action, note = "CLOSE", "max hold"
            self.max_hold_closes += 1
        elif action == "HOLD" and pos is None and f.explore_rate > 0 and self._explore_rng.random() < f.explore_rate:
            dqn = fresh.get("dqn")
            if dqn is not None and self.last_dqn_explored in ("BUY", "SELL"):
                cand = self.last_dqn_explored
                if cand == "BUY" or engine.portfolio.allow_short:
                    action, note = cand, "explore"
                    self.explorations += 1
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
            else:
                executed, why_not = self._execute(st, action, did, fused.contributions, inputs)
        lat = (time.perf_counter() - t_recv) * 1e3
        (self.decision_latency_training_ms if self._training_now else self.decision_latency_ms).append(lat)
        ev = DecisionMade(did, st.symbol, action, fused.score, now, fused.contributions, executed, why_not)
        engine.bus.publish(ev)
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

    def _execute(self, st: SymbolState, action: str, did: int, contribs: tuple[Contribution, ...],
                 inputs: ModelInputs) -> tuple[bool, str]:
        """Send the decision's order: (sent past the risk gate, why not). Fills may follow."""
        engine = self.engine
        if action == "CLOSE":
            result = engine.execute(ClosePosition(st.symbol, "auto", did))
            return result.sent, result.reason
        qty = engine.order_qty(st.symbol)
        if qty is None or qty <= 0:
            return False, "no price for sizing"
        act = ACTION_INDEX[action]
        experiences = {c.model: self.agents[c.model].begin_experience(inputs, act)
                       for c in contribs if c.model in self.agents}
        self._opening[did] = OpenContext(did, inputs, contribs, act, experiences)
        while len(self._opening) > 64:
            self._opening.pop(next(iter(self._opening)))
        result = engine.execute(SubmitOrder(st.symbol, Side(action), qty, "auto", did))
        if not result.sent:
            self._opening.pop(did, None)
        return result.sent, result.reason

    # ------------------------------------------------------------------ learning on close

    def _on_position_opened(self, ev: PositionOpened) -> None:
        if ev.decision_id is not None:
            ctx = self._opening.pop(ev.decision_id, None)
            if ctx is not None:
                self.tracker[ev.position_id] = ctx
            return
        st = self.engine.symbols.get(ev.symbol)
        if st is None or st.book.state is not BookState.LIVE:
            return
        # A manual trade: the models learn from it as a labelled example, equally weighted.
        on = [k for k in MODEL_KEYS if self.enabled[k]]
        contribs = tuple(Contribution(k, ev.side.value, 1.0, 1.0 / len(on)) for k in on)
        inputs, act = self.build_inputs(st), ACTION_INDEX[ev.side.value]
        experiences = {k: self.agents[k].begin_experience(inputs, act) for k in on}
        self.tracker[ev.position_id] = OpenContext(ev.decision_id, inputs, contribs, act, experiences, manual=True)

    def _on_position_closed(self, ev: PositionClosed) -> None:
        ctx = self.tracker.pop(ev.position_id, None)
        if ctx is None:
            return
        for c in ctx.contributions:
            a = self.attribution.setdefault(c.model, {"positions": 0, "pnl": 0.0, "weight": 0.0})
            a["positions"] += 1
            a["pnl"] += float(ev.realised_pnl) * c.weight
            a["weight"] += c.weight
        equity = float(self.engine.balance())
        reward = self.rewarder(ev, equity)
        self.rewards.append(reward)
        comp = " ".join(f"{k}={v:+.3f}" for k, v in reward.components.items())
        self.engine.training_log.append(LogLine(ev.exit_ts, "reward",
                                                f"#{ev.position_id} PnL {ev.realised_pnl:+.4f} → reward {reward.total:+.3f} ({comp})"))
        journal = getattr(self.engine, "journal_reward", None)
        if journal is not None:
            journal(ev, reward)
        if not self.engine.training:
            self.counters.training_off_skips += 1
            return
        for c in ctx.contributions:
            if c.weight <= 0:
                continue
            job = (c.model, ctx, reward, c.weight, ev.exit_ts)
            try:
                self._train_q.put_nowait(job)
                self.counters.training_jobs += 1
            except queue.Full:
                self.counters.training_dropped += 1  # never block ingest for training

    def _train_loop(self) -> None:
        import torch

        torch.set_num_threads(1)
        while True:
            job = self._train_q.get()
            try:
                if job is None:
                    return
                key, ctx, reward, scale, _ = job
                agent = self.agents[key]
                self._training_now = True
                t0 = time.perf_counter()
                skipped = ""
                try:
                    loss = agent.train_on_outcome(ctx.experiences[key], reward.total, scale=scale)
                except Exception as exc:  # a failing update must not kill the trainer
                    loss, skipped = None, f"error: {exc}"
                    log.exception("training %s failed", key)
                if loss is not None and not math.isfinite(loss):
                    loss, skipped = None, "non-finite loss"
                self._training_now = False
                self.train_wall_ms.append((time.perf_counter() - t0) * 1e3)
                self._results.append(TrainResult(key, reward.position_id, reward.total, scale, loss,
                                                 agent.training_steps, (time.perf_counter() - t0) * 1e3, skipped))
            finally:
                self._train_q.task_done()

    def drain_results(self) -> None:
        """Publish finished training steps (on the engine's loop, never from the trainer)."""
        while self._results:
            r = self._results.popleft()
            ts = self.engine.clock.now_ns()
            if r.loss is None:
                text = f"{r.model.upper()} #{r.position_id} reward {r.reward:+.3f}: no update ({r.skipped or 'nothing to learn yet'})"
            else:
                text = (f"{r.model.upper()} #{r.position_id} reward {r.reward:+.3f}×{r.scale:.2f} "
                        f"loss {r.loss:.4f} step {r.step} ({r.wall_ms:.1f} ms)")
            self.engine.training_log.append(LogLine(ts, r.model, text))
            self.engine.bus.publish(ModelTrained(r.model, r.step, r.loss if r.loss is not None else math.nan,
                                                 r.reward, r.position_id, ts))
        if self.cfg.models.checkpoint_every_closes and len(self.rewards) and \
                len(self.rewards) % self.cfg.models.checkpoint_every_closes == 0 and \
                getattr(self, "_last_ckpt_at", -1) != len(self.rewards):
            self._last_ckpt_at = len(self.rewards)
            self.save_checkpoints()

    def _log(self, source: str, text: str, level: str = "info") -> None:
        self.engine.log.append(LogLine(self.engine.clock.now_ns(), source, text, level))

"""The base every agent shares (CNN, DQN, COB): actor/learner copies, guarded updates,
status and checkpoints.

Each agent keeps two copies of its network: a *learner* that the training worker updates
(always in train mode) and an *actor* that the inference thread reads (always in eval
mode, no autograd). After every successful update the learner's tensors are copied into
the actor under a short lock, so a prediction never waits for a training step and never
sees a half-updated or train-mode network (BENCH B6).

Checkpoints are checked whole before anything is copied into the model
(:meth:`Agent.check_checkpoint`: the container, then every tensor's name, shape and dtype,
the optimizer, the RNG states and each agent's own extra state), so a refused file leaves
the model exactly as it was; ``tradedesk models`` runs the same check.

Bad numbers never get in: non-finite inputs refuse the prediction
(:class:`~models.common.inputs.NonFiniteInputError`); non-finite inputs, losses or gradients,
and exploding gradients, skip the update with weights, BatchNorm statistics and optimizer
state untouched, and are counted in ``status()["skipped_updates"]``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from models.common import checkpoint as ckpt
from models.common.adamw import AdamW
from models.common.device import device_description
from models.common.inputs import ModelInputs, Prediction, PredictionRefused
from models.common.outcome_buffer import OutcomeBuffer

#: Returns a model's track record keeps (the engine reads the most recent ones).
TRACK_RECORD_KEPT = 1000
#: A return beyond this (a fraction of notional) is kept as this.
MAX_RETURN = 1e3


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters; works on the meta device (nothing allocated)."""
    return sum(p.numel() for p in module.parameters())


class _AgentRNG:
    """A private torch RNG stream per agent, so dropout draws do not depend on what
    else (another agent, another thread) consumed the global generator."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self._cuda = (device.index or 0) if device.type == "cuda" else None
        with torch.random.fork_rng(devices=[] if self._cuda is None else [self._cuda]):
            torch.manual_seed(seed)
            self._cpu = torch.get_rng_state()
            self._gpu = torch.cuda.get_rng_state(self._cuda) if self._cuda is not None else None

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cpu": self._cpu.clone()}
        if self._gpu is not None:
            out["cuda"] = self._gpu.clone()
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("cpu"), torch.Tensor):
            self._cpu = state["cpu"].clone()
        if self._cuda is not None and isinstance(state.get("cuda"), torch.Tensor):
            self._gpu = state["cuda"].clone()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=[] if self._cuda is None else [self._cuda]):
            torch.set_rng_state(self._cpu)
            if self._cuda is not None and self._gpu is not None:
                torch.cuda.set_rng_state(self._gpu, self._cuda)
            try:
                yield
            finally:
                self._cpu = torch.get_rng_state()
                if self._cuda is not None:
                    self._gpu = torch.cuda.get_rng_state(self._cuda)


def _finite(a: np.ndarray) -> bool:
    return bool(np.isfinite(a).all())


@dataclass(frozen=True)
class CheckpointShape:
    """What a checkpoint of one model must hold: each state-dict tensor's shape and dtype,
    and the shapes of the optimizer's parameters in order."""

    state: dict[str, tuple[tuple[int, ...], torch.dtype]]
    params: list[tuple[int, ...]]

    @classmethod
    def of(cls, net: nn.Module) -> CheckpointShape:
        return cls({k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()},
                   [tuple(p.shape) for p in net.parameters() if p.requires_grad])


def state_dict_problem(state: Any, expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]], field: str) -> str | None:
    """Why ``state`` is not a state dict of these names, shapes and dtypes (None: it is)."""
    if not isinstance(state, Mapping):
        return f"field {field}: expected a table of tensors"
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected), key=str)
    if missing or unexpected:
        return f"field {field}: state dict keys differ (missing {missing[:3]}, unexpected {unexpected[:3]})"
    for k, (shape, dtype) in expected.items():
        v = state[k]
        if not isinstance(v, torch.Tensor):
            return f"field {field}.{k}: expected a tensor"
        if tuple(v.shape) != shape:
            return f"field {field}.{k}: shape {tuple(v.shape)} in the checkpoint vs {shape} in the model"
        if v.dtype != dtype:
            return f"field {field}.{k}: dtype {v.dtype} vs model {dtype}"
    return None


def np_rng_problem(state: Any, field: str) -> str | None:
    """Why ``state`` cannot be a numpy generator's ``bit_generator.state`` (None: it can)."""
    if not isinstance(state, dict):
        return f"field {field}: expected a numpy generator state (a table)"
    probe = type(np.random.default_rng(0).bit_generator)()
    try:
        probe.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        return f"field {field}: not a usable generator state ({type(exc).__name__}: {exc})"
    return None


def _is_adamw_state(sd: Any) -> bool:
    return isinstance(sd, dict) and sd.get("format") == "tradedesk-adamw"


def _optimizer_problem(sd: Any, params: list[tuple[int, ...]]) -> str | None:
    if not isinstance(sd, dict):
        return "field extra.optimizer: expected a table"
    if not _is_adamw_state(sd):
        return None  # an older optimizer's state: not loaded (the moments start afresh), as always
    state, groups = sd.get("state"), sd.get("param_groups")
    if not isinstance(state, list) or len(state) != len(params):
        return f"field extra.optimizer.state: expected one entry per parameter ({len(params)})"
    for i, (st, shape) in enumerate(zip(state, params, strict=True)):
        if not isinstance(st, dict) or (st and set(st) != {"step", "exp_avg", "exp_avg_sq"}):
            return f"field extra.optimizer.state.{i}: expected step, exp_avg and exp_avg_sq (or nothing)"
        if not st:
            continue
        if type(st["step"]) is not int or not 1 <= st["step"] <= ckpt.MAX_COUNTER:
            return f"field extra.optimizer.state.{i}.step = {st['step']!r}: expected an integer >= 1"
        for key in ("exp_avg", "exp_avg_sq"):
            v = st[key]
            if not isinstance(v, torch.Tensor) or tuple(v.shape) != shape or not v.is_floating_point():
                return f"field extra.optimizer.state.{i}.{key}: expected a float tensor of shape {shape}"
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
        return "field extra.optimizer.param_groups: expected one group"
    g = groups[0]

    def num(v: Any) -> bool:
        return type(v) in (int, float) and math.isfinite(v)

    betas = g.get("betas")
    checks = (("lr", num(g.get("lr")) and g["lr"] > 0),
              ("betas", isinstance(betas, list | tuple) and len(betas) == 2
               and all(num(b) and 0 <= b < 1 for b in betas)),
              ("eps", num(g.get("eps")) and g["eps"] > 0),
              ("weight_decay", num(g.get("weight_decay")) and g["weight_decay"] >= 0))
    for name, ok in checks:
        if not ok:
            return f"field extra.optimizer.param_groups.0.{name} = {g.get(name)!r}: out of range"
    return None


@dataclass(frozen=True, slots=True)
class Experience:
    """What a model saw and what was done, begun at decision time and completed with the
    reward when the position it led to closes (:meth:`Agent.train_on_outcome`).

    ``steps`` are the later decisions taken while the position stayed open (kept or
    closed), added by :meth:`Agent.extend_experience`; ``regime`` is the market regime
    when it opened (trending / ranging / volatile), for the models that weigh by it.
    """

    inputs: ModelInputs
    action: int
    handle: int | None = None  # the agent's own bookkeeping (the DQN's pending transition)
    regime: str | None = None
    steps: list[tuple[ModelInputs, int]] = field(default_factory=list)


class Agent:
    """Common machinery: actor/learner copies, guarded updates, status, checkpoints.

    The engine talks to every model through the same calls: :meth:`predict`;
    :meth:`begin_experience` at decision time and :meth:`extend_experience` at each later
    decision while the position is open; :meth:`train_on_outcome` when it closes;
    :meth:`train_on_counterfactual` with what a BUY and a SELL opened at a HOLD would have
    made (the shadow's counterfactual); :meth:`train_on_label` for a confirmed perfect move
    (models with ``learns_from_labels``); :meth:`on_market_time`; and :meth:`save` /
    :meth:`load`.
    """

    kind: ClassVar[str] = ""
    #: Whether confirmed perfect moves (hindsight swing labels per timeframe) teach this model.
    learns_from_labels: ClassVar[bool] = False
    #: Counters :meth:`_load_counters` reads as integers.
    INT_COUNTERS: ClassVar[tuple[str, ...]] = ("training_steps", "predictions")
    config: Any

    def __init__(self, name: str, preset: str, config: Any, device: str | torch.device, seed: int) -> None:
        self.name = name
        self.preset = preset
        self.config = config
        self.device = torch.device(device)
        self.seed = seed
        self.enabled = True  # toggled by the engine/UI; predict() does not check it
        self.exploring = True  # off for evaluation: predict() then never draws a random action
        self._rng = _AgentRNG(seed, self.device)
        self.np_rng = np.random.default_rng(seed)
        with self._rng.active(), self.device:
            self.learner = self._build().train()
        self.actor = copy.deepcopy(self.learner).eval().requires_grad_(False)
        # Our own AdamW: any torch.optim optimizer imports torch._dynamo (~3 s), see models.common.adamw.
        self.optimizer = AdamW(self.learner.parameters(), lr=config.lr,
                               weight_decay=getattr(config, "weight_decay", 0.0))
        self.parameters = count_parameters(self.learner)
        self._publish_lock = threading.Lock()
        self._train_lock = threading.RLock()
        self.predictions = 0
        self.refused_predictions = 0
        self.training_steps = 0
        self.skip_reasons: Counter[str] = Counter()
        self.last_skip = ""  # why the last training call did not update (set by the call, "" when it did)
        self.last_latency_ms: float | None = None
        self._latencies: deque[float] = deque(maxlen=256)
        self._losses: deque[float] = deque(maxlen=5)
        self.last_loss: float | None = None
        self.last_reward: float | None = None
        # The model's own track record: the returns (after fees, as fractions of notional) of
        # the last positions it opened from its own signal; kept with the checkpoint, so a
        # model's record travels with the weights that earned it.
        self.track_record: deque[float] = deque(maxlen=TRACK_RECORD_KEPT)
        self._record_lock = threading.Lock()  # the engine adds to it while a save may read it
        # What this agent found checkpoint files to be (by inode, size and mtime): a save
        # then knows, without reading it again, whether the current file may become .prev.
        self._verdicts: dict[str, tuple[tuple[int, int, int], str | None]] = {}

    def note_return(self, ret: float) -> None:
        """Add one of its own positions' return (after fees, a fraction of notional) to the record."""
        if math.isfinite(ret):
            with self._record_lock:
                self.track_record.append(max(-MAX_RETURN, min(MAX_RETURN, float(ret))))

    def record(self) -> list[float]:
        """The track record, oldest first."""
        with self._record_lock:
            return list(self.track_record)

    def set_exploration(self, on: bool) -> None:
        """Exploration on (learning) or off (evaluating a frozen model)."""
        self.exploring = on

    # -------------------------------------------------------------- to override
    def predict(self, inputs: ModelInputs) -> Prediction:
        """Batch-1 inference under ``torch.inference_mode`` on the actor copy."""
        raise NotImplementedError

    def begin_experience(self, inputs: ModelInputs, action: int, *, regime: str | None = None) -> Experience:
        """Remember what was seen and done at decision time (the inputs are not copied: the
        engine hands out read-only arrays it never changes)."""
        return Experience(inputs, int(action), regime=regime)

    def extend_experience(self, experience: Experience, inputs: ModelInputs, action: int) -> None:
        """A later decision while the position is open (HOLD keeps it, the opposite side
        closes it); the models that spread the outcome over every decision use these."""
        experience.steps.append((inputs, int(action)))

    def train_on_outcome(self, experience: Experience, reward: float, *, scale: float = 1.0) -> float | None:
        """Learn from the reward of the closed position ``experience`` led to, scaled by
        ``scale``; the loss, or None when the update was skipped (counted) or not possible yet."""
        return self.train_on_reward(experience.inputs, experience.action, reward, scale=scale)

    def train_on_counterfactual(self, inputs: ModelInputs, rewards: tuple[float, float, float], *,
                                scale: float = 1.0) -> float | None:
        """Learn what each action would have earned from ``inputs`` (BUY, HOLD, SELL: the
        rewards of positions opened then and closed a fixed time later, HOLD being 0)."""
        raise NotImplementedError

    def train_on_label(self, inputs: ModelInputs, timeframe: int, action: int, *, weight: float = 1.0) -> float | None:
        """Learn a confirmed perfect move: ``action`` was right on head ``timeframe``."""
        self._wait(f"{self.name} does not learn from perfect-move labels")
        return None

    def on_market_time(self, seconds: float) -> None:
        """Market seconds since the session began (schedules that decay within a session)."""
        return None

    def train_on_reward(self, inputs: ModelInputs, action: int, reward: float, **kwargs: Any) -> float | None:
        """Learn from the reward of a closed position; the loss, or None if skipped."""
        raise NotImplementedError

    @classmethod
    def network(cls, config: Any) -> nn.Module:
        """The bare network for ``config`` (built on whatever device is current)."""
        raise NotImplementedError

    def _build(self) -> nn.Module:
        return self.network(self.config)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        return None

    def _counters(self) -> dict[str, int | float]:
        return {
            "training_steps": self.training_steps,
            "predictions": self.predictions,
            "skipped_updates": self.skipped_updates,
        }

    def _load_counters(self, counters: dict[str, Any]) -> None:
        self.training_steps = int(counters.get("training_steps", 0))
        self.predictions = int(counters.get("predictions", 0))

    # -------------------------------------------------------------- inference helpers
    def _infer(self, *args: torch.Tensor) -> Any:
        with self._publish_lock, torch.inference_mode():
            return self.actor(*args)

    def _record_prediction(self, t0: float) -> float:
        ms = (time.perf_counter() - t0) * 1e3
        self.predictions += 1
        self.last_latency_ms = ms
        self._latencies.append(ms)
        return ms

    def _refuse(self, exc: PredictionRefused) -> PredictionRefused:
        self.refused_predictions += 1
        return exc

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not a.flags.writeable:  # the engine shares read-only bar windows; torch wants its own memory
            a = a.copy()
        t = torch.from_numpy(a)
        return t.to(self.device, non_blocking=True) if self.device.type != "cpu" else t

    # -------------------------------------------------------------- training
    @property
    def skipped_updates(self) -> int:
        return sum(self.skip_reasons.values())

    def _skip(self, reason: str) -> None:
        """A refused update (bad numbers, exploding gradient): counted in ``skipped_updates``."""
        self.skip_reasons[reason] += 1
        self.last_skip = reason

    def _wait(self, reason: str) -> None:
        """No update because there is nothing to learn from yet (not a failure, not counted)."""
        self.last_skip = reason

    def _guarded_update(
        self,
        compute: Callable[[], tuple[torch.Tensor, Any]],
        after_step: Callable[[dict[str, torch.Tensor]], None] | None = None,
    ) -> tuple[float | None, Any]:
        """Run one optimizer step, or skip it (counted) with the model left exactly as it was.

        BatchNorm running statistics change during a train-mode forward, so they are
        snapshot first and restored on a skip; the optimizer only steps on success.
        """
        buffers = {k: v.detach().clone() for k, v in self.learner.named_buffers()}

        def restore() -> None:
            with torch.no_grad():
                for k, v in self.learner.named_buffers():
                    v.copy_(buffers[k])
            self.optimizer.zero_grad(set_to_none=True)

        self.optimizer.zero_grad(set_to_none=True)
        self.learner.train()  # explicit: the learner is only ever updated in train mode
        with self._rng.active():
            loss, aux = compute()
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            restore()
            self._skip("non-finite loss")
            return None, aux
        loss.backward()
        params = [p for p in self.learner.parameters() if p.grad is not None]
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        if not math.isfinite(norm):
            restore()
            self._skip("non-finite gradient")
            return None, aux
        if norm > self.config.skip_grad_norm:
            restore()
            self._skip("exploding gradient")
            return None, aux
        self.optimizer.step()
        if after_step is not None:
            after_step(buffers)
        self.training_steps += 1
        self.last_loss = loss_value
        self._losses.append(loss_value)
        self._publish()
        return loss_value, aux

    def _publish(self) -> None:
        """Copy the learner's parameters and buffers into the actor (brief lock)."""
        src = list(self.learner.parameters()) + list(self.learner.buffers())
        dst = list(self.actor.parameters()) + list(self.actor.buffers())
        with self._publish_lock, torch.no_grad():
            for d, s in zip(dst, src, strict=True):
                d.copy_(s)

    # -------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """Live numbers for the models pane; plain values only."""
        lat = sorted(self._latencies)
        return {
            "name": self.name,
            "kind": self.kind,
            "preset": self.preset,
            "enabled": self.enabled,
            "params": self.parameters,
            "device": device_description(self.device),
            "predictions": self.predictions,
            "refused_predictions": self.refused_predictions,
            "last_latency_ms": self.last_latency_ms,
            "latency_p50_ms": lat[len(lat) // 2] if lat else None,
            "last_loss": self.last_loss,
            "loss_ma5": sum(self._losses) / len(self._losses) if self._losses else None,
            "training_steps": self.training_steps,
            "epsilon": None,
            "skipped_updates": self.skipped_updates,
            "skip_reasons": dict(self.skip_reasons),
            "last_reward": self.last_reward,
        }

    # -------------------------------------------------------------- checkpoints
    def save(self, path: str | Path, metrics: dict[str, float] | None = None) -> Path:
        """Atomic, self-describing checkpoint; raises if any weight is non-finite or the file
        cannot be written. The current file becomes ``.prev.pt`` only if this agent would load
        it; one it would refuse goes to ``quarantine/`` instead (see :func:`checkpoint.save_checkpoint`)."""
        with self._train_lock:
            payload = ckpt.build_payload(
                kind=self.kind,
                preset=self.preset,
                config=asdict(self.config),
                state_dict=self.learner.state_dict(),
                extra={
                    "optimizer": self.optimizer.state_dict(),
                    "rng": self._rng.state(),
                    "np_rng": self.np_rng.bit_generator.state,
                    "track_record": self.record(),
                    **self._extra_state(),
                },
                counters=self._counters(),
                metrics=metrics,
                parameters=self.parameters,
                device=device_description(self.device),
            )
            out = ckpt.save_checkpoint(path, payload, current_verdict=self._verdict)
            self._remember(out, None)
            return out

    def load(self, path: str | Path, *, fallback: bool = True) -> dict[str, Any]:
        """Load ``path``; if it is refused and ``fallback``, try ``<name>.prev.pt``.

        Returns ``{"path", "fallback", "refused": [reasons]}``; raises
        :class:`~models.common.checkpoint.CheckpointError` when nothing could be loaded, in which
        case the model is unchanged. Every refusal names the file and the field.
        """
        refused: list[str] = []
        candidates = [Path(path)] + ([ckpt.previous_path(path)] if fallback else [])
        for i, p in enumerate(candidates):
            if i > 0 and not p.exists():
                break
            try:
                with self._train_lock:
                    self._apply(p)
            except ckpt.CheckpointError as exc:
                refused.append(str(exc))
                self._remember(p, exc.reason)
                continue
            self._remember(p, None)
            return {"path": str(p), "fallback": i > 0, "refused": refused}
        raise ckpt.CheckpointError(path, "no loadable checkpoint: " + " | ".join(refused))

    # ---- verdicts
    @staticmethod
    def _signature(path: Path) -> tuple[int, int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _remember(self, path: Path, reason: str | None) -> None:
        sig = self._signature(path)
        if sig is not None:
            self._verdicts[os.path.abspath(path)] = (sig, reason)

    def _verdict(self, path: Path) -> str | None:
        """None when this agent would load ``path``, else why not (cached by file identity)."""
        sig = self._signature(path)
        known = self._verdicts.get(os.path.abspath(path))
        if known is not None and sig is not None and known[0] == sig:
            return known[1]
        try:
            self.check_checkpoint(path, preset=self.preset, config=self.config, shape=self._shape())
        except ckpt.CheckpointError as exc:
            reason: str | None = exc.reason
        else:
            reason = None
        self._remember(path, reason)
        return reason

    def _shape(self) -> CheckpointShape:
        return CheckpointShape.of(self.learner)

    # ---- checks (no instance needed: ``tradedesk models`` runs them on the meta device)
    @classmethod
    def checkpoint_shape(cls, config: Any) -> CheckpointShape:
        """The shapes a checkpoint for ``config`` must have (a network on the meta device: no memory)."""
        with torch.device("meta"):
            return CheckpointShape.of(cls.network(config))

    @classmethod
    def check_checkpoint(cls, path: str | Path, *, preset: str, config: Any, shape: CheckpointShape | None = None,
                         data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything loading checks, without touching a model: the container and its fields,
        kind, preset and architecture, every tensor's shape and dtype, the optimizer, RNG
        states, counters and the agent's own extra state. Returns the data; raises
        :class:`~models.common.checkpoint.CheckpointError` naming the file and the field."""
        data = ckpt.load_checkpoint(path, kind=cls.kind, preset=preset, config=asdict(config),
                                    arch_fields=type(config).ARCH_FIELDS, data=data)
        shape = shape or cls.checkpoint_shape(config)
        problem = state_dict_problem(data["state_dict"], shape.state, "state_dict")
        counters = data.get("counters") or {}
        for name in cls.INT_COUNTERS:
            if problem is None and name in counters and type(counters[name]) is not int:
                problem = f"field counters.{name} = {counters[name]!r}: expected an integer >= 0"
        extra = data.get("extra") or {}
        if problem is None and "optimizer" in extra:
            problem = _optimizer_problem(extra["optimizer"], shape.params)
        if problem is None and "rng" in extra:
            problem = _rng_problem(extra["rng"])
        if problem is None and "np_rng" in extra:
            problem = np_rng_problem(extra["np_rng"], "extra.np_rng")
        if problem is None and "track_record" in extra:
            problem = _track_record_problem(extra["track_record"])
        if problem is None:
            problem = cls._extra_problem(extra, config, shape)
        if problem is not None:
            raise ckpt.CheckpointError(path, problem)
        return data

    @classmethod
    def _extra_problem(cls, extra: dict[str, Any], config: Any, shape: CheckpointShape) -> str | None:
        """Why this agent's own extra state (buffers, target net) would not load (None: it would)."""
        return None

    def _apply(self, path: Path) -> None:
        data = self.check_checkpoint(path, preset=self.preset, config=self.config, shape=self._shape())
        # Everything was checked above, so nothing below can leave the model half-loaded.
        extra = data.get("extra") or {}
        try:
            self.learner.load_state_dict(data["state_dict"])
            if _is_adamw_state(extra.get("optimizer")):
                self.optimizer.load_state_dict(extra["optimizer"])
                self.optimizer.param_groups[0]["lr"] = self.config.lr  # current settings win over stored ones
            # RNG streams too, so a resumed run draws what an uninterrupted one would have.
            self._rng.load_state(extra.get("rng") or {})
            if extra.get("np_rng"):
                self.np_rng.bit_generator.state = extra["np_rng"]
            with self._record_lock:
                self.track_record = deque(extra.get("track_record") or (), maxlen=TRACK_RECORD_KEPT)
            self._load_extra_state(extra)
            self._load_counters(data.get("counters") or {})
        except (RuntimeError, ValueError, TypeError, KeyError, OverflowError) as exc:  # a check is missing
            raise ckpt.CheckpointError(path, f"could not be applied ({type(exc).__name__}: {exc})") from None
        self._publish()


def outcome_buffer_problem(extra: Mapping[str, Any], fields: Mapping[str, tuple[tuple[int, ...], type]]) -> str | None:
    """Why an agent's saved outcome buffer (``extra.buffer``) and its sampler
    (``extra.buffer_rng``) would not load (None: they would, or are absent)."""
    if "buffer" in extra:
        problem = OutcomeBuffer.state_problem(extra["buffer"], fields, "extra.buffer")
        if problem:
            return problem
    if "buffer_rng" in extra:
        return np_rng_problem(extra["buffer_rng"], "extra.buffer_rng")
    return None


def _track_record_problem(record: Any) -> str | None:
    ok = isinstance(record, list) and len(record) <= TRACK_RECORD_KEPT and all(
        type(r) is float and math.isfinite(r) and abs(r) <= MAX_RETURN for r in record)
    return None if ok else (f"field extra.track_record: expected at most {TRACK_RECORD_KEPT} finite returns "
                            f"(fractions of notional, at most {MAX_RETURN:g} either way)")


def _rng_problem(state: Any) -> str | None:
    if not isinstance(state, dict):
        return "field extra.rng: expected a table of generator states"
    cpu = state.get("cpu")
    want = tuple(torch.get_rng_state().shape)
    if cpu is not None and (not isinstance(cpu, torch.Tensor) or cpu.dtype != torch.uint8 or tuple(cpu.shape) != want):
        return f"field extra.rng.cpu: expected a uint8 tensor of shape {want}"
    cuda = state.get("cuda")
    if cuda is not None and (not isinstance(cuda, torch.Tensor) or cuda.dtype != torch.uint8 or cuda.dim() != 1):
        return "field extra.rng.cuda: expected a 1-D uint8 tensor"
    return None

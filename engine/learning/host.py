"""The model host: the three agents of one engine, their device, on/off state,
checkpoints and status. Everything else in the engine reaches a model through here."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core import failpoints
from engine.core.settings import Settings

if TYPE_CHECKING:
    import torch

    from models.common.base_agent import Agent

MODEL_KEYS = ("cnn", "dqn", "cob")

log = logging.getLogger("tradedesk.models")

#: ``cnn-small.pt`` / ``cnn-small.prev.pt``: the model and preset the desk loads the file as.
_DESK_NAME = re.compile(r"^(?P<key>[a-z]+)-(?P<preset>[A-Za-z0-9_]+)(?:\.prev)?\.pt$")


def model_overrides(cfg: Settings) -> dict[str, dict[str, object]]:
    """Settings that reach into a model's config (everything else is the preset's)."""
    m = cfg.models
    return {"dqn": {"eps_decay_s": m.dqn_epsilon_decay_s, "regime_multipliers": dict(m.regime_multipliers)}}


def checkpoint_file(folder: Path, key: str, preset: str) -> Path:
    return folder / f"{key}-{preset}.pt"


def checkpoint_path(cfg: Settings, key: str) -> Path:
    """Where the desk keeps model ``key``'s checkpoint for the configured preset."""
    return checkpoint_file(desk_checkpoints(cfg), key, cfg.models.preset)


def desk_checkpoints(cfg: Settings) -> Path:
    return cfg.data_dir() / "checkpoints"


@dataclass(frozen=True)
class ModelStore:
    """Where the models come from and where they go: a checkpoint folder to load from at
    start (None: fresh models) and one to save to (None: never saved)."""

    load_from: Path | None
    save_to: Path | None

    @classmethod
    def desk(cls, cfg: Settings) -> ModelStore:
        """The desk's own checkpoints, as ``models.load_checkpoints`` / ``save_checkpoints`` say."""
        folder = desk_checkpoints(cfg)
        return cls(folder if cfg.models.load_checkpoints else None,
                   folder if cfg.models.save_checkpoints else None)


class ModelHost:
    """Builds the agents (seeded, on the configured device), loads their checkpoints, and
    keeps which are on and which are failing. ``log(source, text, level)`` tells the desk."""

    def __init__(self, cfg: Settings, log: Callable[[str, str, str], None], store: ModelStore) -> None:
        import torch

        from models.common import checkpoint
        from models.common.base_agent import seed_everything
        from models.common.device import device_description, select_device
        from models.registry import make_agent

        checkpoint.set_failpoint(failpoints.hit)  # TRADEDESK_CRASH_AT=checkpoint_...: the crash harness

        self.cfg = cfg
        self._log = log
        self.store = store
        m = cfg.models
        self.device: torch.device = select_device(m.device)
        self.device_label = device_description(self.device)
        seed_everything(cfg.general.seed)
        torch.set_num_threads(1)  # inference and training each get one core (BENCH.md)
        overrides = model_overrides(cfg)
        self.agents: dict[str, Agent] = {}
        for i, key in enumerate(MODEL_KEYS):
            self.agents[key] = make_agent(key, m.preset, self.device, cfg.general.seed + i, key.upper(),
                                          **overrides.get(key, {}))
        self.enabled = {k: k in m.enabled for k in MODEL_KEYS}
        self.loaded: dict[str, str] = {}
        self.failing: dict[str, str] = {}
        self.refused: list[str] = []  # checkpoint refusals at load ("<file>: <field>: <why>")
        self.saves = 0
        self.save_failures = 0
        self.last_save_failure = ""
        if store.load_from is not None:
            self.load_checkpoints(store.load_from)

    # ------------------------------------------------------------------ checkpoints

    def load_checkpoints(self, folder: Path) -> None:
        from models.common.checkpoint import CheckpointError

        for key, agent in self.agents.items():
            path = checkpoint_file(folder, key, self.cfg.models.preset)
            if not path.exists() and not path.with_suffix(".prev.pt").exists():
                continue
            try:
                info = agent.load(path)
            except CheckpointError as exc:
                self.refused.append(str(exc))
                self._report(f"{key.upper()} checkpoint refused, starting untrained: {exc}", "error")
                continue
            for why in info["refused"]:
                self.refused.append(why)
                self._report(f"{key.upper()} checkpoint refused: {why}", "warn")
            self.loaded[key] = info["path"]
            note = " (previous checkpoint: the latest was refused)" if info["fallback"] else ""
            self._log("models", f"{key.upper()} loaded {Path(info['path']).name}, step {agent.training_steps}{note}",
                      "info")

    def save_checkpoints(self, folder: Path | None = None) -> dict[str, str]:
        """Save every model that has trained into ``folder`` (default: the store's); a model
        with non-finite weights is not saved. Nothing is saved where the store says never."""
        folder = folder if folder is not None else self.store.save_to
        saved: dict[str, str] = {}
        if folder is None:
            return saved
        for key, agent in self.agents.items():
            if agent.training_steps == 0 and key not in self.loaded:
                continue  # an untrained model is not worth a file
            path = checkpoint_file(folder, key, self.cfg.models.preset)
            try:
                saved[key] = str(agent.save(path))
                self.saves += 1
            except Exception as exc:  # non-finite weights, disk full, read-only folder: the old files stay
                self.save_failures += 1
                self.last_save_failure = f"{key.upper()} checkpoint not saved to {path}: {type(exc).__name__}: {exc}"
                self._report(self.last_save_failure, "error")
        return saved

    def _report(self, text: str, level: str) -> None:
        """To the desk's log and to the log file (and so to stderr in headless commands)."""
        self._log("models", text, level)
        log.log(logging.ERROR if level == "error" else logging.WARNING, "%s", text)

    def summary(self) -> dict[str, Any]:
        """Checkpoint figures for the run summary."""
        return {"checkpoint_save_failures": self.save_failures,
                "checkpoints": {"saved": self.saves, "save_failures": self.save_failures,
                                "last_save_failure": self.last_save_failure, "refused_at_load": list(self.refused),
                                "loaded": dict(self.loaded)}}

    # ------------------------------------------------------------------ on/off and health

    def toggle(self, key: str, enabled: bool | None) -> bool:
        """Switch a model on/off (None flips); False for an unknown key (logged)."""
        key = key.lower()
        if key not in self.agents:
            self._log("models", f"unknown model {key!r} (known: {', '.join(MODEL_KEYS)})", "warn")
            return False
        self.enabled[key] = (not self.enabled[key]) if enabled is None else enabled
        self.agents[key].enabled = self.enabled[key]
        self._log("models", f"{key.upper()} {'ON' if self.enabled[key] else 'OFF'}", "info")
        return True

    def available(self) -> list[str]:
        """Models that are on and not failing."""
        return [k for k in MODEL_KEYS if self.enabled[k] and k not in self.failing]

    def trained(self, key: str) -> bool:
        return self.agents[key].training_steps > 0 or key in self.loaded

    def failed(self, key: str, why: str) -> None:
        """A model's prediction raised: it drops out of fusion until it predicts again."""
        if key not in self.failing:
            self._log("models", f"{key.upper()} failed and drops out of fusion: {why}", "error")
        self.failing[key] = why

    def recovered(self, key: str) -> None:
        self.failing.pop(key, None)

    # ------------------------------------------------------------------ status

    def status(self, signal_counts: Mapping[str, int], last_signal: Mapping[str, str]) -> list[dict[str, object]]:
        out = []
        for key, agent in self.agents.items():
            s = agent.status()
            s.update(key=key, enabled=self.enabled[key], state="trained" if self.trained(key) else "untrained",
                     failing=self.failing.get(key, ""), signals=signal_counts.get(key, 0),
                     checkpoint=self.loaded.get(key))
            if key in last_signal:
                s["signal"] = last_signal[key]
            out.append(s)
        return out

    def training_steps(self) -> dict[str, int]:
        return {k: a.training_steps for k, a in self.agents.items()}


def checkpoint_verdicts(cfg: Settings, folder: Path) -> list[dict[str, Any]]:
    """``tradedesk models``: one row per checkpoint file (``.prev.pt`` too) with the verdict
    loading would give. A desk file (``<model>-<preset>[.prev].pt``) is checked as the desk
    loads it (that model and preset); any other file as what it says it is."""
    from models.common.checkpoint import CheckpointError, list_checkpoints
    from models.registry import check_checkpoint

    overrides = model_overrides(cfg)
    rows = list_checkpoints(folder, include_previous=True)
    for row in rows:
        data = row.pop("data", None)
        if data is None:
            continue
        m = _DESK_NAME.match(Path(row["path"]).name)
        kind, preset = (m["key"], m["preset"]) if m and m["key"] in MODEL_KEYS else (row["model"], row["preset"])
        try:
            check_checkpoint(row["path"], kind, preset, data=data, **overrides.get(kind, {}))
        except CheckpointError as exc:
            row["error"] = exc.reason
    return rows

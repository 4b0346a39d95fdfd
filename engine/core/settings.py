"""Strict settings: a typed schema, TOML loading, ``--set`` overrides.

Every key has a type, a range and a one-line meaning here; ``settings.toml`` at the
repository root documents the same keys with their defaults (a test keeps the two in
step). Loading refuses unknown keys, missing keys, wrong types, ``nan``/``inf`` and
out-of-range values, naming the key and what was expected. Secrets never live here:
API keys come from environment variables only.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any


class SettingsError(ValueError):
    """Bad settings; the message names the key and what was expected."""


@dataclass(frozen=True)
class Key:
    kind: str  # int float bool str decimal list_str dict_float choice
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    lo_open: bool = False  # lo is exclusive

    def expect(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        rng = ""
        if self.lo is not None or self.hi is not None:
            fmt = (lambda x: str(int(x))) if self.kind == "int" else (lambda x: f"{x:g}")
            lo = "-inf" if self.lo is None else fmt(self.lo)
            hi = "inf" if self.hi is None else fmt(self.hi)
            rng = f" in {'(' if self.lo_open else '['}{lo}, {hi}]"
        names = {
            "int": "an integer",
            "float": "a finite number",
            "bool": "true or false",
            "str": "a string",
            "decimal": "a decimal number as a string (e.g. \"0.001\")",
            "list_str": "a list of strings",
            "dict_float": "a table of finite numbers",
        }
        return names[self.kind] + rng


def _k(kind: str, default: Any, doc: str, **kw: Any) -> Key:
    return Key(kind, default, doc, **kw)


TF_WEIGHTS = {"1s": 0.05, "1m": 0.05, "5m": 0.10, "15m": 0.15, "1h": 0.25, "4h": 0.25, "1d": 0.20}

SCHEMA: dict[str, dict[str, Key]] = {
    "general": {
        "data_dir": _k("str", "~/.local/share/tradedesk", "ledger, checkpoints, recordings, logs"),
        "samples_dir": _k("str", "", "where the sample recording lives; empty = <data_dir>/samples"),
        "samples_url": _k(
            "str",
            "https://raw.githubusercontent.com/nkaz001/hftbacktest/"
            "5f3ec40b2afb764e0fea112f941ed85523ef4e88/examples/spot",
            "public address the demo downloads the sample recording from",
        ),
        "log_level": _k("choice", "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
        "seed": _k("int", 7, "seed for every random number generator", lo=0, hi=2**31 - 1),
        "keep_run_ledgers": _k("int", 20, "replay runs' ledgers kept in <data_dir>/ledger/runs, newest first; older ones are deleted when a replay ends (0 = a replay leaves none behind; runs in progress and the paper/live ledgers are never touched)", lo=0, hi=100000),
    },
    "symbols": {
        "primary": _k("str", "ETH/USDT", "the symbol traded and charted"),
        "reference": _k("str", "BTC/USDT", "reference symbol streamed beside it; empty for none"),
    },
    # -- owned by the live feed (engine/feeds) ------------------------------------------
    "exchange": {
        "venue": _k("choice", "binance", "primary venue (Binance spot wire protocol)", choices=("binance",)),
        "ws_url": _k("str", "wss://stream.binance.com:9443", "Binance websocket base URL (Binance.US, testnet, or a local server)"),
        "rest_url": _k("str", "https://api.binance.com", "Binance REST base URL"),
        "extra_venues": _k("list_str", [], "ccxt.pro exchange ids streamed beside Binance and merged into the COB view (e.g. [\"okx\"])"),
        "stale_after_s": _k("float", 5.0, "a stream silent this long is STALE (its book too); a silent connection is dropped, seconds", lo=0.1, hi=600),
        "ping_interval_s": _k("float", 20.0, "keepalive: we ping the server this often, seconds (the server's own pings are always answered)", lo=0.05, hi=600),
        "ping_timeout_s": _k("float", 20.0, "keepalive: no pong within this long means a dead connection, seconds", lo=0.05, hi=600),
        "timeout_s": _k("float", 10.0, "connect and REST request timeout, seconds", lo=0.1, hi=300),
        "backoff_base_s": _k("float", 0.5, "first reconnect/retry delay; doubles per failure, with jitter, seconds", lo=0.001, hi=60),
        "backoff_max_s": _k("float", 30.0, "cap on the reconnect/retry delay, seconds", lo=0.01, hi=3600),
        "reconnect_before_s": _k("float", 85800.0, "reconnect on our own after this long, before Binance's 24 h cut, seconds", lo=0.5, hi=86400),
        "snapshot_limit": _k("int", 1000, "levels a side in a REST depth snapshot (Binance: up to 5000; 1000 weighs 50)", lo=5, hi=5000),
        "backfill": _k("bool", True, "back-fill bars from REST klines at start so models and charts have history"),
        "backfill_bars": _k("int", 500, "klines fetched per timeframe for the back-fill (Binance: at most 1000)", lo=1, hi=1000),
    },
    # -- owned by the models (models/, engine/learning/brain.py, engine/learning/fusion.py) ---------------
    "models": {
        "device": _k("choice", "auto", "auto = cuda, then mps, then cpu", choices=("auto", "cpu", "cuda", "mps")),
        "preset": _k("choice", "small", "model size preset: small (CPU-friendly) or large (~50M CNN / 5M DQN / 400M COB, for a GPU)", choices=("small", "large")),
        "enabled": _k("list_str", ["cnn", "dqn", "cob"], "models switched on at start (cnn, dqn, cob)"),
        "load_checkpoints": _k("bool", True, "load the latest checkpoints from <data_dir>/checkpoints at start"),
        "save_checkpoints": _k("bool", True, "save checkpoints on exit and every checkpoint_every_closes closed positions"),
        "checkpoint_every_closes": _k("int", 20, "save checkpoints after this many closed positions (0 = only on exit)", lo=0, hi=100000),
        "decision_interval_ms": _k("int", 1000, "DQN and fusion run this often, in market time (ms)", lo=50, hi=3600000),
        "cob_interval_ms": _k("int", 200, "the COB model reads the book this often, in market time (ms)", lo=50, hi=600000),
        "cnn_min_bars": _k("int", 5, "bars a timeframe needs before its CNN head is used, online and offline alike (the 60-bar window is zero-padded at the old end until it fills)", lo=1, hi=60),
        "dqn_epsilon_decay_s": _k("float", 120.0, "the DQN's exploration rate decays from 1 toward 0.05 over this much market time in each session (1/e left after it), seconds", lo=1, hi=86400 * 30),
        "regime_multipliers": _k("dict_float", {"trending": 1.2, "ranging": 0.8, "volatile": 0.6}, "the DQN's reward is multiplied by the market regime's factor when the position opened (trending, ranging, volatile)"),
        "regime_window_s": _k("float", 300.0, "market regime: trending when the move over this window is more than twice its volatility, volatile when the last minute's volatility is more than twice the window's pace, else ranging; seconds", lo=60, hi=86400),
        "training_queue": _k("int", 64, "training jobs waiting at most; more closes than this are dropped and counted", lo=1, hi=100000),
    },
    "fusion": {
        "weights": _k("dict_float", {"cnn": 0.7, "dqn": 0.15, "cob": 0.15}, "model weights, renormalised over the models available at each decision"),
        "tf_weights": _k("dict_float", {"1s": 0.05, "1m": 0.05, "5m": 0.10, "15m": 0.15, "1h": 0.25, "4h": 0.25, "1d": 0.20}, "CNN timeframe weights, renormalised over the timeframes that are not warming up"),
        "open_threshold": _k("float", 0.20, "fused score needed to open a position", lo=0, hi=1),
        "close_threshold": _k("float", 0.10, "fused score against the position needed to close it", lo=0, hi=1),
        "explore_rate": _k("float", 0.05, "chance per decision, when flat and holding, of an exploratory entry (the account takes the DQN's exploratory side; a model's shadow its own) so the models get outcomes to learn from (0 = never); it falls as the record grows", lo=0, hi=1),
        "explore_decay_trades": _k("float", 20.0, "the exploration chance halves once the account (or a model's shadow) has this many closed trades, and keeps falling as 1/trades (0 = never falls)", lo=0, hi=1e6),
        "min_hold_s": _k("float", 30.0, "an automatic position (and a shadow's) is held at least this long before the close threshold may close it, so a signal's noise does not churn it (the max hold still applies), in market seconds", lo=0, hi=86400),
        "explore_min_hold_s": _k("float", 30.0, "an exploratory position is held at least this long before the close threshold may close it, in market seconds", lo=0, hi=86400),
        "max_hold_s": _k("float", 120.0, "automatic decisions (and shadows) close a position held longer than this, in market seconds (0 = no limit)", lo=0, hi=86400 * 30),
        "record_weighting": _k("float", 50.0, "how far each model's own record moves its weight: the weight is multiplied by exp(this × the sum of the returns of its last fusion.record_window shadow positions, after fees, as fractions of notional; exploratory entries left out), at most ×20 either way (0 = fixed weights); per unit of return", lo=0, hi=1e4),
        "record_window": _k("int", 20, "how many of a model's latest own shadow positions its record weight counts", lo=1, hi=1000),
    },
    "learning": {
        "shadow_positions": _k("bool", True, "each model keeps its own shadow positions from its own signal (same thresholds, exits, sizes, fills and fees, outside the account and the risk budget); their closes train it"),
        "probe_every_s": _k("float", 5.0, "how often (market seconds) the desk notes what a BUY and a SELL opened now would make: HOLD's counterfactual, which teaches every model (0 = never)", lo=0, hi=3600),
        "probe_hold_s": _k("float", 30.0, "how long a counterfactual position is held before its outcome is known and taught, seconds", lo=1, hi=86400),
        "online_perfect_moves": _k("bool", True, "the CNN learns each perfect move (a swing extremum of training.swing_threshold) as soon as it is confirmed"),
    },
    "training": {
        "swing_threshold": _k("dict_float", {"1s": 0.002, "1m": 0.005, "5m": 0.01, "15m": 0.015, "1h": 0.02, "4h": 0.03, "1d": 0.05},
                              "perfect-move swing threshold per timeframe, as a fraction of price (seed: 0.02)"),
        "epochs": _k("int", 3, "passes over the labelled samples in `tradedesk train`", lo=1, hi=1000),
        "batch_size": _k("int", 64, "samples per optimizer step in `tradedesk train`", lo=1, hi=65536),
        "validation_fraction": _k("float", 0.2, "`tradedesk train` holds out this last part of a recording's market time and reports out-of-sample figures on it", lo=0.05, hi=0.5),
    },
    "rewards": {
        "pnl_scale": _k("float", 100.0, "reward per unit of PnL after fees as a fraction of entry notional (0.004 = 0.4 % gives 0.4)", lo=0, hi=1e6),
        "time_penalty_per_min": _k("float", 0.01, "penalty per minute held past free_hold_s", lo=0, hi=100),
        "free_hold_s": _k("float", 300.0, "hold time without a time penalty (seconds)", lo=0, hi=86400 * 30),
        "risk_scale": _k("float", 10.0, "penalty per unit of the price's realised volatility over the hold (a fraction of price: 0.002 = 0.2 % costs 0.02)", lo=0, hi=1e6),
        "consistency_scale": _k("float", 0.05, "reward per unit of z-score of this PnL against the owner's last 20 (clipped to ±3)", lo=0, hi=1000),
        "win_streak_step": _k("float", 0.02, "bonus per win in a row", lo=0, hi=10),
        "win_streak_cap": _k("float", 0.1, "largest win-streak bonus", lo=0, hi=10),
        "loss_streak_step": _k("float", 0.05, "penalty per loss in a row", lo=0, hi=10),
        "loss_streak_cap": _k("float", 0.2, "largest loss-streak penalty", lo=0, hi=10),
        "clip": _k("float", 10.0, "rewards are clipped to [-clip, clip]", lo=0, lo_open=True, hi=1e6),
    },
    # -- owned by execution (engine/execution/risk.py, engine/execution/ledger.py, executors) ---------------
    "risk": {
        "max_order_notional": _k("decimal", "1000", "largest single order that adds exposure, in quote (closes may be larger)", lo=0, lo_open=True),
        "max_position_notional": _k("decimal", "3000", "largest open position per symbol, in quote at the order's price", lo=0, lo_open=True),
        "max_daily_loss": _k("decimal", "300", "day loss (realised since 00:00 UTC + unrealised, after fees), in quote, that switches trading to REDUCING", lo=0, lo_open=True),
        "max_orders_per_min": _k("int", 30, "orders accepted per rolling minute (manual and automatic together; the panic flatten is exempt)", lo=1, hi=100000),
        "max_consecutive_errors": _k("int", 5, "order rejections/errors in a row that HALT trading", lo=1, hi=1000),
        "max_data_age_s": _k("float", 10.0, "an order is denied when the symbol's last market message is older than this (s)", lo=0, lo_open=True, hi=3600),
    },
    "bars": {
        "close_grace_ms": _k("int", 1000, "a bar closes this long after its end if no later trade came", lo=0, hi=60000),
        "tick_cache_s": _k("float", 900.0, "seconds of trades kept in the tick cache", lo=10, hi=86400),
        "history": _k("int", 2000, "closed bars kept per timeframe", lo=100, hi=100000),
    },
    "paper": {
        "starting_balance": _k("decimal", "10000", "paper account quote balance (USDT)", lo=0, lo_open=True),
        "taker_fee": _k("decimal", "0.001", "taker fee rate (0.001 = 0.1 %)", lo=0, hi=0.1),
        "maker_fee": _k("decimal", "0.001", "maker fee rate", lo=0, hi=0.1),
        "allow_short": _k("bool", True, "SELL when flat opens a short on paper"),
        "latency_ms": _k("int", 50, "order latency: a paper order fills on the book as it is this long (market time) after it is sent", lo=0, hi=60000),
    },
    "live": {
        "exchange": _k("str", "binance", "ccxt exchange id for live orders (only with --live and a typed confirmation)"),
        "sandbox": _k("bool", True, "use the exchange's testnet through ccxt's sandbox mode; false trades real money"),
        "timeout_ms": _k("int", 10000, "ccxt request timeout; a timed-out order is UNKNOWN until resolved by its client id", lo=100, hi=120000),
        "resolve_attempts": _k("int", 5, "queries by client order id before an unknown order counts as never placed", lo=1, hi=100),
        "resolve_delay_ms": _k("int", 1000, "wait before each query of an unknown order", lo=0, hi=60000),
        "rest_url": _k("str", "", "REST base URL live orders go to, e.g. http://127.0.0.1:8080 for a local fake exchange; empty = ccxt's own address for live.exchange (Binance's testnet with live.sandbox, https://api.binance.com without)"),
        "start_attempts": _k("int", 3, "attempts to connect the live executor (markets, then the balance, which proves the keys) before live trading halts; refused keys halt at once", lo=1, hi=20),
    },
    "trading": {
        "order_notional": _k("decimal", "100", "size of one manual or automatic order, in quote (USDT)", lo=0, lo_open=True),
        "notional_step": _k("decimal", "50", "how much +/- change the order size, in quote", lo=0, lo_open=True),
        "auto_trade": _k("bool", True, "automatic trading from fused decisions (paper, replay, backtest)"),
    },
    "ui": {
        "refresh_hz": _k("float", 5.0, "how often the desk reads the engine snapshot", lo=1, hi=10),
        "chart_timeframe": _k("choice", "1m", "main chart timeframe", choices=("1s", "1m", "5m", "15m", "1h")),
    },
    "keys": {
        "buy": _k("str", "b", "buy at market"),
        "sell": _k("str", "s", "sell at market"),
        "close": _k("str", "c", "close the open position"),
        "panic": _k("str", "x", "flatten everything and halt"),
        "auto": _k("str", "a", "automatic trading on/off"),
        "toggle_cnn": _k("str", "1", "CNN on/off"),
        "toggle_dqn": _k("str", "2", "DQN on/off"),
        "toggle_cob": _k("str", "3", "COB model on/off"),
        "training": _k("str", "t", "training on/off"),
        "size_up": _k("str", "plus", "order size up"),
        "size_down": _k("str", "minus", "order size down"),
        "pause": _k("str", "space", "pause/resume a replay"),
        "sample_replay": _k("str", "r", "when the live exchange cannot be reached: open the sample replay"),
        "help": _k("str", "question_mark", "help"),
        "quit": _k("str", "q", "quit"),
    },
}

SECRET_HINT = "API keys come from the environment (TRADEDESK_API_KEY / TRADEDESK_API_SECRET), never settings"  # noqa: S105 - a message, not a secret


def register(section: str, keys: Mapping[str, Key]) -> None:
    """Add a section to the schema (used by modules that own a settings section)."""
    SCHEMA.setdefault(section, {}).update(keys)


class Settings:
    """Validated settings: ``s.section.key`` or ``s["section.key"]``."""

    def __init__(self, values: dict[str, dict[str, Any]], source: str) -> None:
        self._values = values
        self.source = source
        for section, keys in values.items():
            object.__setattr__(self, section, _Section(section, keys))

    if TYPE_CHECKING:  # sections are set per instance from the schema; tell the type checker

        def __getattr__(self, name: str) -> Any: ...

    def __getitem__(self, dotted: str) -> Any:
        section, _, key = dotted.partition(".")
        return self._values[section][key]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s: {k: (str(v) if isinstance(v, Decimal) else v) for k, v in kv.items()}
                for s, kv in self._values.items()}

    def data_dir(self) -> Path:
        return Path(os.path.expanduser(self["general.data_dir"]))

    def with_overrides(self, overrides: list[str]) -> Settings:
        values = {s: dict(kv) for s, kv in self._values.items()}
        apply_overrides(values, overrides)
        return Settings(values, self.source)


class _Section:
    def __init__(self, name: str, keys: dict[str, Any]) -> None:
        self.__dict__.update(keys)
        self._name = name

    def __repr__(self) -> str:
        return f"<settings [{self._name}]>"


def _coerce(key: str, spec: Key, value: Any) -> Any:
    bad = SettingsError(f"setting {key} = {value!r}: expected {spec.expect()}")
    kind = spec.kind
    if kind == "bool":
        if type(value) is not bool:
            raise bad
        return value
    if kind == "int":
        if type(value) is not int:
            raise bad
        out: Any = value
    elif kind == "float":
        if type(value) not in (int, float) or not math.isfinite(value):
            raise bad
        out = float(value)
    elif kind == "decimal":
        if type(value) not in (str, int, float, Decimal):
            raise bad
        try:
            out = Decimal(str(value))
        except InvalidOperation:
            raise bad from None
        if not out.is_finite() or out.adjusted() > 15:
            raise bad
    elif kind in ("str", "choice"):
        if type(value) is not str:
            raise bad
        if kind == "choice" and value not in spec.choices:
            raise bad
        return value
    elif kind == "list_str":
        if type(value) is not list or not all(type(v) is str for v in value):
            raise bad
        return list(value)
    elif kind == "dict_float":
        if type(value) is not dict:
            raise bad
        for k, v in value.items():
            if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
                raise SettingsError(f"setting {key}.{k} = {v!r}: expected a finite number >= 0")
        return {k: float(v) for k, v in value.items()}
    else:  # pragma: no cover - schema error
        raise AssertionError(kind)
    num = float(out)
    if spec.lo is not None and (num < spec.lo or (spec.lo_open and num == spec.lo)):
        raise bad
    if spec.hi is not None and num > spec.hi:
        raise bad
    return out


def _looks_secret(key: str) -> bool:
    k = key.lower()
    return any(w in k for w in ("secret", "api", "key", "token", "password", "passphrase"))


def defaults() -> dict[str, dict[str, Any]]:
    return {s: {k: spec.default for k, spec in keys.items()} for s, keys in SCHEMA.items()}


def validate(raw: Mapping[str, Any], *, source: str, partial: bool = False) -> dict[str, dict[str, Any]]:
    """Check a parsed TOML document against the schema; return coerced values."""
    out = defaults()
    for section, table in raw.items():
        if section not in SCHEMA:
            raise SettingsError(f"{source}: unknown section [{section}] (known: {', '.join(SCHEMA)})")
        if not isinstance(table, dict):
            raise SettingsError(f"{source}: [{section}] must be a table")
        for key, value in table.items():
            if key not in SCHEMA[section]:
                hint = f" ({SECRET_HINT})" if _looks_secret(key) else ""
                raise SettingsError(f"{source}: unknown key {section}.{key}{hint}")
            out[section][key] = _coerce(f"{section}.{key}", SCHEMA[section][key], value)
    if not partial:
        for section, keys in SCHEMA.items():
            for key, spec in keys.items():
                if key not in raw.get(section, {}):
                    raise SettingsError(
                        f"{source}: missing key {section}.{key} ({spec.doc}; expected {spec.expect()},"
                        f" default {spec.default!r} - copy it from the repository's settings.toml)"
                    )
    for section, keys in out.items():
        for key, value in keys.items():
            out[section][key] = _coerce(f"{section}.{key}", SCHEMA[section][key], value)
    _cross_check(out, source)
    return out


_CHECKS: list[Callable[[dict[str, dict[str, Any]], str], None]] = []


def cross_check(fn: Callable[[dict[str, dict[str, Any]], str], None]) -> Callable[[dict[str, dict[str, Any]], str], None]:
    """Register a check across keys (e.g. close threshold <= open threshold)."""
    _CHECKS.append(fn)
    return fn


def _cross_check(values: dict[str, dict[str, Any]], source: str) -> None:
    keys = values["keys"]
    seen: dict[str, str] = {}
    for action, key in keys.items():
        if key in seen:
            raise SettingsError(f"{source}: keys.{action} = {key!r} is already bound to keys.{seen[key]}")
        seen[key] = action
    for fn in _CHECKS:
        fn(values, source)


@cross_check
def _check_data_dir(values: dict[str, dict[str, Any]], source: str) -> None:
    text = values["general"]["data_dir"]
    if not text.strip():
        raise SettingsError(f"{source}: general.data_dir is empty; expected a folder (default "
                            f"{SCHEMA['general']['data_dir'].default!r}), not the current directory")
    path = Path(os.path.expanduser(text))
    if path.exists() and not path.is_dir():
        raise SettingsError(f"{source}: general.data_dir = {text!r} is a file, expected a folder")
    for parent in path.parents:  # a file further up would stop every folder below it being made
        if parent.exists():
            if not parent.is_dir():
                raise SettingsError(f"{source}: general.data_dir = {text!r}: {parent} is a file, expected a folder")
            break


@cross_check
def _check_models(values: dict[str, dict[str, Any]], source: str) -> None:
    known = ("cnn", "dqn", "cob")
    for key in values["models"]["enabled"]:
        if key not in known:
            raise SettingsError(f"{source}: models.enabled: unknown model {key!r}; expected some of {', '.join(known)}")
    for key in values["fusion"]["weights"]:
        if key not in known:
            raise SettingsError(f"{source}: fusion.weights.{key}: unknown model; expected some of {', '.join(known)}")
    tfs = ("1s", "1m", "5m", "15m", "1h", "4h", "1d")
    for key in values["fusion"]["tf_weights"]:
        if key not in tfs:
            raise SettingsError(f"{source}: fusion.tf_weights.{key}: not a CNN timeframe; expected some of {', '.join(tfs)}")
    regimes = ("trending", "ranging", "volatile")
    got = values["models"]["regime_multipliers"]
    if set(got) != set(regimes):
        raise SettingsError(f"{source}: models.regime_multipliers: expected exactly {', '.join(regimes)}, got "
                            f"{', '.join(sorted(got)) or 'nothing'}")
    for tf in values["training"]["swing_threshold"]:
        if tf not in tfs:
            raise SettingsError(f"{source}: training.swing_threshold.{tf}: not a CNN timeframe; expected some of "
                                f"{', '.join(tfs)}")
    f = values["fusion"]
    if f["close_threshold"] > f["open_threshold"]:
        raise SettingsError(f"{source}: fusion.close_threshold ({f['close_threshold']}) must not exceed "
                            f"fusion.open_threshold ({f['open_threshold']})")


@cross_check
def _check_exchange(values: dict[str, dict[str, Any]], source: str) -> None:
    ex = values["exchange"]
    if not ex["ws_url"].startswith(("ws://", "wss://")):
        raise SettingsError(f"{source}: exchange.ws_url = {ex['ws_url']!r}: expected a ws:// or wss:// URL")
    if not ex["rest_url"].startswith(("http://", "https://")):
        raise SettingsError(f"{source}: exchange.rest_url = {ex['rest_url']!r}: expected an http:// or https:// URL")
    if ex["backoff_base_s"] > ex["backoff_max_s"]:
        raise SettingsError(f"{source}: exchange.backoff_base_s ({ex['backoff_base_s']}) must not exceed "
                            f"exchange.backoff_max_s ({ex['backoff_max_s']})")
    for v in ex["extra_venues"]:
        if not v.isidentifier() or v != v.lower():
            raise SettingsError(f"{source}: exchange.extra_venues: {v!r} is not a ccxt exchange id (lower case, e.g. \"okx\")")


@cross_check
def _check_live(values: dict[str, dict[str, Any]], source: str) -> None:
    from urllib.parse import urlsplit

    url = values["live"]["rest_url"]
    if not url:
        return
    try:
        u = urlsplit(url)
        _ = u.port  # raises on a bad port
    except ValueError:
        u = None
    if u is not None and (u.username is not None or u.password is not None):
        raise SettingsError(f"{source}: live.rest_url must not carry credentials ({SECRET_HINT})")  # never echoed
    if u is None or u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment:
        raise SettingsError(f"{source}: live.rest_url = {url!r}: expected an http:// or https:// base URL "
                            "(e.g. http://127.0.0.1:8080), or \"\" for ccxt's own address")


def _parse_override_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string: --set symbols.primary=SOL/USDT


def apply_overrides(values: dict[str, dict[str, Any]], overrides: list[str]) -> None:
    for item in overrides:
        dotted, eq, text = item.partition("=")
        section, dot, key = dotted.strip().partition(".")
        if not eq or not dot:
            # Nothing is echoed: it may be a key pasted in the wrong place.
            what = "no '='" if not eq else "no section before the key"
            raise SettingsError(f"--set: expected section.key=value ({what}; the argument is not shown)")
        if section not in SCHEMA or key not in SCHEMA[section]:
            secret = _looks_secret(key)
            hint = f" ({SECRET_HINT}; the value was not used and is not shown)" if secret else ""
            raise SettingsError(f"--set {section}.{key}=...: unknown key {section}.{key}{hint}")
        values[section][key] = _coerce(dotted.strip(), SCHEMA[section][key], _parse_override_value(text.strip()))
    _cross_check(values, "--set")


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "tradedesk" / "settings.toml"


def find_config(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    for cand in (Path("settings.toml"), user_config_path()):
        if cand.is_file():
            return cand
    return None


#: A settings file is a few kilobytes; anything much larger is not one (``/dev/zero``, a log).
MAX_CONFIG_BYTES = 1 << 20


def _read_config(path: Path) -> str:
    """The text of a settings file: a regular file of at most MAX_CONFIG_BYTES, else SettingsError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SettingsError(f"settings file {path}: cannot read it ({exc.strerror or exc})") from None
    import stat as _stat

    if _stat.S_ISDIR(st.st_mode):
        raise SettingsError(f"settings file {path}: is a directory, expected a TOML file")
    if not _stat.S_ISREG(st.st_mode):
        raise SettingsError(f"settings file {path}: not a regular file (a device or pipe?), expected a TOML file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"settings file {path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise SettingsError(f"settings file {path}: larger than {MAX_CONFIG_BYTES // 1024} KiB, not a settings file")
    return data.decode("utf-8")


def load(path: str | Path | None = None, overrides: list[str] | None = None, *, search: bool = True) -> Settings:
    """Load settings: ``path``, else ./settings.toml, else the user config, else defaults."""
    found = find_config(str(path) if path else None) if (path or search) else None
    if found is None:
        values = defaults()
        for section, keys in values.items():
            for key, value in keys.items():
                keys[key] = _coerce(f"{section}.{key}", SCHEMA[section][key], value)
        source = "built-in defaults"
    else:
        try:
            raw = tomllib.loads(_read_config(found))
        except FileNotFoundError:
            raise SettingsError(f"settings file not found: {found}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{found}: not valid TOML: {exc}") from None
        values = validate(raw, source=str(found))
        source = str(found)
    if overrides:
        apply_overrides(values, overrides)
    return Settings(values, source)


# ---------------------------------------------------------------------------- documentation

_HEADER = """\
# tradedesk settings: every key with its meaning, unit and default.
#
# Loaded from --config PATH, else ./settings.toml, else ~/.config/tradedesk/settings.toml,
# else built-in defaults. A settings file must hold every key (copy this one and edit);
# unknown keys, missing keys, wrong types, nan/inf and out-of-range values stop the start
# with a message naming the key. Override any key for one run with
# `--set section.key=value` (repeatable).
#
# Secrets never live here: API keys come from the environment variables
# TRADEDESK_API_KEY and TRADEDESK_API_SECRET only.
#
# This file is generated from engine/core/settings.py (`python -m engine.core.settings > settings.toml`);
# a test keeps the two in step.
"""


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, Decimal):
        return f'"{v}"'
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def render_toml() -> str:
    """The documented default settings file."""
    out = [_HEADER]
    for section, keys in SCHEMA.items():
        out.append(f"\n[{section}]")
        for key, spec in keys.items():
            out.append(f"# {spec.doc}. Expected: {spec.expect()}.")
            out.append(f"{key} = {_toml_value(spec.default)}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render_toml(), end="")

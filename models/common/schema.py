"""The feature schema shared by the engine (which computes features) and the models.

Pure constants: both sides import this module, so neither imports the other. The
schema is stored in every checkpoint; a checkpoint whose schema differs is refused.
"""

from __future__ import annotations

SCHEMA_VERSION = 2  # 2: a 1 s CNN head; the COB and DQN standardise their inputs

#: Timeframes the engine builds bars for, in seconds.
TIMEFRAMES: dict[str, int] = {
    "1s": 1,
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}

#: Timeframes that have a CNN head (seed weights: 1m .05 … 1d .20). The 1 s head sees the
#: last minute second by second: a desk session of minutes has history there long before
#: its 1 m window fills (the other heads come in as their timeframes warm up).
CNN_TIMEFRAMES: tuple[str, ...] = ("1s", "1m", "5m", "15m", "1h", "4h", "1d")

#: Per-bar features, computed on bar close. Every one is scale-free (ratios, z-scores,
#: bounded oscillators) so one model works across symbols and price levels.
BAR_FEATURES: tuple[str, ...] = (
    "ret_1",        # log(close / previous close)
    "range",        # (high - low) / close
    "body",         # (close - open) / close
    "sma20_dev",    # close / SMA20 - 1
    "sma50_dev",    # close / SMA50 - 1
    "rsi14",        # RSI(14) / 100 - 0.5
    "macd",         # MACD(12,26) / close
    "macd_signal",  # signal(9) / close
    "macd_hist",    # histogram / close
    "bb_pctb",      # Bollinger %B(20, 2) - 0.5
    "willr14",      # Williams %R(14) / 100 + 0.5
    "vol_z",        # volume z-score over 20 bars
    "buy_ratio",    # taker-buy volume / volume - 0.5
    "trades_z",     # trade-count z-score over 20 bars
)
N_BAR_FEATURES = len(BAR_FEATURES)

#: Bars per timeframe window fed to the CNN, and the last DQN_BARS bars of DQN_TIMEFRAME fed
#: to the DQN: it decides every second, so it reads the last seconds (a 1 m window would be
#: zeros for the first minutes of a session and change its meaning as it fills).
WINDOW = 60
DQN_BARS = 10
DQN_TIMEFRAME = "1s"

#: Order-book levels per side fed to the COB model.
COB_LEVELS = 20
#: Per level: price offset from mid in basis points, size as a share of the side's top-N size.
COB_LEVEL_FEATURES = 2
#: Scalar book and trade-flow features appended after the levels.
COB_EXTRA: tuple[str, ...] = (
    "spread_bps",
    "imbalance_1",
    "imbalance_5",
    "imbalance_10",
    "imbalance_20",
    "microprice_bps",   # microprice offset from mid, bps
    "bid_slope",        # cumulative size slope over top-N bids (normalised)
    "ask_slope",
    "flow_1s",          # (buy - sell) / (buy + sell) taker volume over the last 1 s
    "flow_5s",
    "flow_30s",
    "trade_rate_z",     # trades per second over 5 s, z-scored against 60 s
)
COB_INPUT = 2 * COB_LEVELS * COB_LEVEL_FEATURES + len(COB_EXTRA)

#: Position state appended to the DQN input: side (-1/0/1), unrealised PnL fraction,
#: time in position (fraction of the configured max hold).
POSITION_FEATURES: tuple[str, ...] = ("side", "upnl_frac", "hold_frac")
DQN_INPUT = DQN_BARS * N_BAR_FEATURES + len(COB_EXTRA) + len(POSITION_FEATURES)

#: Actions, in this order, for every model.
ACTIONS: tuple[str, ...] = ("BUY", "HOLD", "SELL")
BUY, HOLD, SELL = 0, 1, 2


def describe() -> dict[str, object]:
    """The schema as a plain dict, stored in checkpoints and compared on load."""
    return {
        "version": SCHEMA_VERSION,
        "bar_features": list(BAR_FEATURES),
        "cnn_timeframes": list(CNN_TIMEFRAMES),
        "window": WINDOW,
        "dqn_bars": DQN_BARS,
        "dqn_timeframe": DQN_TIMEFRAME,
        "cob_levels": COB_LEVELS,
        "cob_extra": list(COB_EXTRA),
        "position_features": list(POSITION_FEATURES),
        "actions": list(ACTIONS),
    }

"""What the models see: one symbol's bars, book and flow as :class:`ModelInputs`.

Bar windows change only when a bar closes, so they are built then and reused until the
next close; they are read-only, so the contexts of open positions can share them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from engine.core.events import NS_PER_S
from engine.core.settings import Settings
from engine.market.features import book_features
from models.common.schema import (
    CNN_TIMEFRAMES,
    COB_EXTRA,
    COB_INPUT,
    COB_LEVELS,
    DQN_BARS,
    DQN_INPUT,
    DQN_TIMEFRAME,
    N_BAR_FEATURES,
    WINDOW,
)

if TYPE_CHECKING:
    from engine.execution.positions import Position
    from engine.market.symbol_state import SymbolState
    from models.common.inputs import ModelInputs


class Observer:
    """Builds the inputs of every model from a :class:`SymbolState` and its open position."""

    def __init__(self, cfg: Settings) -> None:
        self.min_bars = cfg.models.cnn_min_bars
        self.free_hold_s = cfg.rewards.free_hold_s
        self._bars_key: tuple[object, ...] = ()
        self._bars_cache: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.empty(0), np.empty(0), np.empty(0))

    def inputs(self, st: SymbolState, position: Position | None, now_ns: int) -> ModelInputs:
        from models.common.inputs import ModelInputs

        key = (st.symbol, *(st.features[tf].count for tf in CNN_TIMEFRAMES))
        if self._bars_key != key:
            bars = np.stack([st.features[tf].window(WINDOW) for tf in CNN_TIMEFRAMES])
            valid = np.array([st.features[tf].count >= self.min_bars for tf in CNN_TIMEFRAMES], dtype=bool)
            recent = st.features[DQN_TIMEFRAME].window(DQN_BARS).ravel()
            for a in (bars, valid, recent):
                a.flags.writeable = False
            self._bars_key, self._bars_cache = key, (bars, valid, recent)
        bars, valid, recent = self._bars_cache
        book = st.book.book
        flow = st.ticks.flow.stats(st.last_event_ns)
        cob = book_features(book.top_bids(COB_LEVELS), book.top_asks(COB_LEVELS), flow)
        dqn = np.concatenate([recent, cob[-len(COB_EXTRA):],
                              self.position_state(st, position, now_ns)]).astype(np.float32)
        return ModelInputs(bars=bars, bars_valid=valid, cob=cob, dqn_state=dqn)

    def bars_at(self, st: SymbolState, t_ns: int) -> ModelInputs | None:
        """The bar windows as they were at ``t_ns`` (for a perfect move confirmed later);
        the book and DQN parts are zeros (only the CNN learns from these). None when the
        rings no longer hold that past."""
        from models.common.inputs import ModelInputs

        bars = np.zeros((len(CNN_TIMEFRAMES), WINDOW, N_BAR_FEATURES), np.float32)
        valid = np.zeros(len(CNN_TIMEFRAMES), bool)
        for i, tf in enumerate(CNN_TIMEFRAMES):
            got = st.features[tf].window_at(t_ns, WINDOW)
            if got is None:
                continue
            bars[i], count = got
            valid[i] = count >= self.min_bars
        if not valid.any():
            return None
        return ModelInputs(bars=bars, bars_valid=valid, cob=np.zeros(COB_INPUT, np.float32),
                           dqn_state=np.zeros(DQN_INPUT, np.float32))

    def position_state(self, st: SymbolState, pos: Position | None, now_ns: int) -> np.ndarray:
        """Side (-1/0/1), unrealised PnL as a fraction of entry notional, time held (÷ free hold)."""
        if pos is None:
            return np.zeros(3, np.float32)
        mark = st.book.mid() or pos.entry_price
        notional = pos.entry_price * pos.qty
        upnl = float(pos.unrealised(mark) / notional) if notional else 0.0
        held_s = max(now_ns - pos.entry_ts, 0) / NS_PER_S
        hold = min(held_s / max(self.free_hold_s, 1.0), 2.0)
        return np.array([pos.side.sign, upnl, hold], np.float32)

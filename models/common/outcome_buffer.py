"""A preallocated numpy ring of learning samples with uniform seeded sampling.

Outcomes of closed positions are few; each one is kept and replayed in later minibatches
(as the DQN's prioritised replay does for its transitions), so a model takes many small
steps from a session's worth of outcomes instead of one noisy step each. The ring is
part of the checkpoint, so a restart keeps what was learned from.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class OutcomeBuffer:
    """Fixed-capacity ring of named arrays (``fields``: name -> (shape, dtype))."""

    def __init__(self, capacity: int, fields: Mapping[str, tuple[tuple[int, ...], type]], seed: int = 0) -> None:
        self.capacity = int(capacity)
        self.data: dict[str, np.ndarray] = {k: np.zeros((self.capacity, *shape), dtype) for k, (shape, dtype) in fields.items()}
        self.rng = np.random.default_rng(seed)
        self._next = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, **values: np.ndarray | float | int) -> None:
        i = self._next
        for k, arr in self.data.items():
            arr[i] = values[k]
        self._next = (i + 1) % self.capacity
        self._len = min(self._len + 1, self.capacity)

    def sample(self, n: int, newest: bool = True) -> dict[str, np.ndarray]:
        """``n`` samples drawn uniformly (with replacement); ``newest`` puts the latest one in."""
        idx = self.rng.integers(0, self._len, size=n)
        if newest and n:
            idx[0] = (self._next - 1) % self.capacity
        return {k: v[idx] for k, v in self.data.items()}

    def state(self) -> dict[str, np.ndarray]:
        """The filled part, oldest first (for checkpoints)."""
        order = (np.arange(self._len) + (self._next - self._len)) % self.capacity
        return {k: v[order].copy() for k, v in self.data.items()}

    @staticmethod
    def state_problem(arrays: object, fields: Mapping[str, tuple[tuple[int, ...], type]], field: str) -> str | None:
        """Why ``arrays`` is not a :meth:`state` of a buffer with ``fields`` (None: it is).
        Every field present, one row count for all, each row of the field's shape and dtype."""
        if not isinstance(arrays, Mapping):
            return f"field {field}: expected a table of arrays"
        if set(arrays) != set(fields):
            return f"field {field}: fields {sorted(map(str, arrays))} vs {sorted(fields)}"
        rows = None
        for k, (shape, dtype) in fields.items():
            a = arrays[k]
            got_dtype = getattr(a, "dtype", None)
            try:
                a = np.asarray(a)
            except (TypeError, ValueError, RuntimeError):
                return f"field {field}.{k}: not an array"
            if a.ndim != 1 + len(shape) or a.shape[1:] != tuple(shape):
                return f"field {field}.{k}: rows of shape {a.shape[1:]} vs {tuple(shape)}"
            if a.dtype != np.dtype(dtype):
                return f"field {field}.{k}: dtype {got_dtype} vs {np.dtype(dtype)}"
            if rows is not None and len(a) != rows:
                return f"field {field}.{k}: {len(a)} rows vs {rows} in the other fields"
            rows = len(a)
        return None

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        n = 0
        for k, v in arrays.items():
            if k in self.data:
                a = np.asarray(v)
                if a.shape[1:] != self.data[k].shape[1:]:
                    raise ValueError(f"outcome buffer field {k}: shape {a.shape[1:]} vs {self.data[k].shape[1:]}")
                n = min(len(a), self.capacity)
                self.data[k][:n] = a[-n:]
        self._len, self._next = n, n % self.capacity

"""Prioritised experience replay: a preallocated numpy ring plus a sum tree.

Proportional PER (Schaul et al. 2016): P(i) = p_i^alpha / sum p^alpha, importance
weights (N * P(i))^-beta normalised by their max. Storage is allocated once, so a long
session never grows memory (BENCH B11), and every draw comes from one seeded generator
so a replay with the same seed samples the same batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


class SumTree:
    """Binary sum tree over ``capacity`` leaves (rounded up to a power of two).

    Node ``i`` holds the sum of nodes ``2i`` and ``2i+1``; leaves live at
    ``[size, 2*size)``. Updates and prefix-sum lookups are O(log n) and vectorised.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        self.size = 1 << (capacity - 1).bit_length()
        self.tree = np.zeros(2 * self.size, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def update(self, leaves: np.ndarray, values: np.ndarray) -> None:
        """Set leaf priorities and fix the sums on the way up."""
        # Duplicate leaves: keep the last value (numpy fancy assignment semantics), then
        # recompute parents from children, which is idempotent and so safe with repeats.
        idx = np.asarray(leaves, dtype=np.int64) + self.size
        self.tree[idx] = values
        idx = np.unique(idx // 2)
        while idx[0] >= 1:
            self.tree[idx] = self.tree[2 * idx] + self.tree[2 * idx + 1]
            if idx[0] == 1:
                break
            idx = np.unique(idx // 2)

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf index whose cumulative-sum interval contains each ``mass``."""
        node = np.ones(len(mass), dtype=np.int64)
        mass = np.asarray(mass, dtype=np.float64).copy()
        while node[0] < self.size:  # every path has the same depth (power-of-two size)
            left = 2 * node
            go_right = mass >= self.tree[left]
            mass = np.where(go_right, mass - self.tree[left], mass)
            node = np.where(go_right, left + 1, left)
        return node - self.size


@dataclass(frozen=True, slots=True)
class ReplayBatch:
    """One sampled batch; ``indices`` are needed to update priorities afterwards."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_states: np.ndarray
    dones: np.ndarray
    weights: np.ndarray
    indices: np.ndarray


class PrioritizedReplay:
    """Fixed-capacity ring of (s, a, r, s', done) with proportional prioritised sampling."""

    def __init__(
        self,
        capacity: int,
        state_dim: int,
        *,
        alpha: float = 0.6,
        eps: float = 1e-6,
        seed: int = 0,
    ) -> None:
        self.capacity = int(capacity)
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.states = np.zeros((capacity, state_dim), np.float32)
        self.next_states = np.zeros((capacity, state_dim), np.float32)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.dones = np.zeros(capacity, np.float32)
        self.tree = SumTree(capacity)
        self.max_priority = 1.0
        self.rng = np.random.default_rng(seed)
        self._next = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, state: np.ndarray, action: int, reward: float, next_state: np.ndarray, done: bool) -> int:
        """Store one experience with the max priority seen so far (so it is replayed soon)."""
        i = self._next
        self.states[i] = state
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_states[i] = next_state
        self.dones[i] = float(done)
        self.tree.update(np.array([i]), np.array([self.max_priority**self.alpha]))
        self._next = (i + 1) % self.capacity
        self._len = min(self._len + 1, self.capacity)
        return i

    def sample(self, batch_size: int, beta: float = 0.4) -> ReplayBatch:
        """Stratified proportional sample (with replacement) and normalised IS weights."""
        if self._len == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        total = self.tree.total
        # One uniform draw per equal-mass segment lowers variance versus i.i.d. draws.
        bounds = np.linspace(0.0, total, batch_size + 1)
        mass = self.rng.uniform(bounds[:-1], bounds[1:])
        idx = self.tree.find(np.minimum(mass, np.nextafter(total, 0.0)))
        idx = np.minimum(idx, self._len - 1)  # guards float edge cases at the top end
        prio = self.tree.tree[idx + self.tree.size]
        probs = np.maximum(prio / total, 1e-12)
        weights = (self._len * probs) ** (-beta)
        weights = (weights / weights.max()).astype(np.float32)
        return ReplayBatch(
            states=self.states[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            next_states=self.next_states[idx],
            dones=self.dones[idx],
            weights=weights,
            indices=idx,
        )

    def state(self) -> dict[str, np.ndarray]:
        """The filled part, oldest first, with its priorities (for checkpoints)."""
        order = (np.arange(self._len) + (self._next - self._len)) % self.capacity
        return {"states": self.states[order].copy(), "actions": self.actions[order].copy(),
                "rewards": self.rewards[order].copy(), "next_states": self.next_states[order].copy(),
                "dones": self.dones[order].copy(), "priorities": self.tree.tree[order + self.tree.size].copy(),
                "max_priority": np.array([self.max_priority])}

    @staticmethod
    def state_problem(state: object, state_dim: int, n_actions: int, field: str) -> str | None:
        """Why ``state`` is not a :meth:`state` of a replay of ``state_dim`` (None: it is)."""
        if not isinstance(state, Mapping):
            return f"field {field}: expected a table of arrays"
        spec: dict[str, tuple[tuple[int, ...], type]] = {
            "states": ((state_dim,), np.float32), "next_states": ((state_dim,), np.float32),
            "actions": ((), np.int64), "rewards": ((), np.float32), "dones": ((), np.float32),
            "priorities": ((), np.float64)}
        if set(state) != {*spec, "max_priority"}:
            return f"field {field}: fields {sorted(map(str, state))} vs {sorted({*spec, 'max_priority'})}"
        rows = None
        arrays: dict[str, np.ndarray] = {}
        for k, (shape, dtype) in spec.items():
            try:
                a = np.asarray(state[k])
            except (TypeError, ValueError, RuntimeError):
                return f"field {field}.{k}: not an array"
            if a.ndim != 1 + len(shape) or a.shape[1:] != shape or a.dtype != np.dtype(dtype):
                return f"field {field}.{k}: {a.dtype} array of shape {a.shape}, expected (n, {', '.join(map(str, shape))}) " \
                       f"of {np.dtype(dtype)}".replace(", )", ")")
            if rows is not None and len(a) != rows:
                return f"field {field}.{k}: {len(a)} rows vs {rows} in the other fields"
            rows = len(a)
            arrays[k] = a
        if len(arrays["actions"]) and not ((arrays["actions"] >= 0).all() and (arrays["actions"] < n_actions).all()):
            return f"field {field}.actions: expected actions in [0, {n_actions})"
        if not (np.isfinite(arrays["priorities"]).all() and (arrays["priorities"] >= 0).all()):
            return f"field {field}.priorities: expected finite priorities >= 0"
        mp = np.asarray(state["max_priority"])
        if mp.shape != (1,) or not np.isfinite(mp).all() or not float(mp[0]) > 0:
            return f"field {field}.max_priority: expected one finite number > 0"
        return None

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Refill from :meth:`state` (the newest ``capacity`` transitions if there were more)."""
        states = np.asarray(state["states"], np.float32)
        if states.ndim != 2 or states.shape[1] != self.states.shape[1]:
            raise ValueError(f"replay states of shape {states.shape}, expected (n, {self.states.shape[1]})")
        n = min(len(states), self.capacity)
        sl = slice(len(states) - n, len(states))
        self.states[:n] = states[sl]
        self.next_states[:n] = np.asarray(state["next_states"], np.float32)[sl]
        self.actions[:n] = np.asarray(state["actions"], np.int64)[sl]
        self.rewards[:n] = np.asarray(state["rewards"], np.float32)[sl]
        self.dones[:n] = np.asarray(state["dones"], np.float32)[sl]
        self.tree = SumTree(self.capacity)
        if n:
            self.tree.update(np.arange(n), np.asarray(state["priorities"], np.float64)[sl])
        self.max_priority = float(np.asarray(state.get("max_priority", [1.0])).ravel()[0])
        self._len, self._next = n, n % self.capacity

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Priority = |TD error| + eps; non-finite errors get the current max instead."""
        err = np.abs(np.asarray(td_errors, np.float64))
        err = np.where(np.isfinite(err), err, self.max_priority) + self.eps
        self.max_priority = max(self.max_priority, float(err.max()))
        self.tree.update(np.asarray(indices), err**self.alpha)

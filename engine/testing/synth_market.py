"""Markets with a known answer: seeded synthetic Binance sessions (``tradedesk synth``).

A session holds two symbols, **ETHUSDT** (the traded primary, starting at 2500.00) and
**BTCUSDT** (the reference, starting at 60000.00), in the capture format the replay
reads: one ``<sym>@depthSnapshot`` line per symbol (66 levels a side), then
``@depth@100ms`` diffs every 100 ms of event time with a consistent update-id chain
(a step in which no level changed sends none, as on Binance),
``@trade`` frames with increasing trade ids, and ``@bookTicker`` frames whenever the best
bid or ask changes. Event times start at 2024-01-01T00:00:00Z; each line's receive stamp
is its event time + 5 ms + a seeded jitter under 2 ms, never earlier than the line
before (one connection delivers in order). Numbers are spelt as Binance spells them.

The hidden mechanism
--------------------
Per symbol a latent *pressure* ``x``, an Ornstein–Uhlenbeck process with time constant
``tau = 30 s`` and stationary standard deviation 1, stepped every ``dt = 100 ms``::

    x <- x * exp(-dt/tau) + sqrt(1 - exp(-2 dt/tau)) * N(0, 1)

It shows, identically in both markets, in what a trader observes:

- **book imbalance**: the top 10 levels a side have sizes
  ``base * lognormal(0, 0.3) * exp(+0.5 x)`` (bids) and ``... * exp(-0.5 x)`` (asks);
  a level's lognormal factor persists and is redrawn at random (2 % a step), and a posted
  size is re-quoted when its target has moved by more than 10 %;
- **taker flow**: trades arrive as a Poisson process (4 a second a symbol); each is a
  taker BUY (at the best ask, ``m=false``) with probability ``0.5 + 0.35 tanh(x)``, else a
  taker SELL (at the best bid, ``m=true``); sizes lognormal, capped at the best level.

The mid price moves by a log return every step:

- ``planted`` (ETHUSDT only): ``r = mu x dt + sigma sqrt(dt) eps`` with
  ``mu = strength * 2.0e-4 /s`` and ``sigma = 4e-4 /sqrt(s)``. Imbalance and flow now
  predict the mid: ``E[30-s log return | x] = mu x tau (1 - e^-1) ~= 0.38 % * x`` at
  strength 1, more than the 0.2 % taker round trip once ``|x| > ~0.6``; the correlation
  of ``x`` with the next 30-s return is about 0.68 (:func:`expected_corr_fwd`).
- ``null``: the same generator, the same ``x`` driving imbalance and flow, but the price
  is a martingale, ``r = sigma_null sqrt(dt) eps``, with ``sigma_null`` chosen so the
  10-s volatility equals the planted one:
  ``sigma_null^2 = sigma^2 + mu^2 * 2 tau^2 (H/tau - 1 + e^(-H/tau)) / H`` at ``H = 10 s``
  (the variance of the integral of an OU process). Only at that horizon: over longer
  ones the planted drift, persistent for ``tau``, makes planted prices wander further.

BTCUSDT is a martingale with ``sigma`` in both markets; its own independent ``x`` drives
only its book and flow. A seed fixes everything (numpy ``default_rng`` streams per
component), so ``planted`` and ``null`` with one seed share the pressure paths, the price
shocks ``eps``, the spreads and the trade times, sides and drawn sizes: only the price
law differs. The same arguments give a byte-identical file (gzip written with ``mtime=0``
and no file name); nothing reads the wall clock.

Book shape: the best bid and ask are ``round(mid - s/2)`` and that plus ``s`` ticks, the
spread ``s`` being 1, 2 or 3 ticks (60 / 30 / 10 %, redrawn 10 % of the steps), so the
book is never crossed or locked. Behind the best, levels sit on a fixed price lattice
(every 10 ticks for ETH, every 200 for BTC: 0.3–0.4 bp for both), 50 to 80 of them a
side, so that a move of the mid (about 30 ticks of ETH a step at this volatility) adds
and removes a few levels near the top instead of repricing the whole book; the far end
is trimmed or refilled only when a side leaves that band.
"""

from __future__ import annotations

import functools
import gzip
import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import orjson

MARKETS = ("planted", "null")
MAX_MINUTES = 1440  # a day: the per-step series are held in memory (~100 bytes a step)

#: 2024-01-01T00:00:00Z in ms: the first event time of every session.
START_MS = 1_704_067_200_000
STEP_MS = 100
DT = STEP_MS / 1000.0
TAU_S = 30.0
SIGMA = 4e-4  # per sqrt(second)
MU_PER_STRENGTH = 2.0e-4  # per second, per unit of x
VOL_HORIZON_S = 10.0  # the horizon at which null's volatility matches planted's
FWD_HORIZON_S = 30.0  # the horizon of the measured predictive correlation
TRADES_PER_S = 4.0
BUY_TILT = 0.35
IMBALANCE_LOADING = 0.5
SIZE_NOISE = 0.3
TOP_LEVELS = 10  # levels a side whose size carries the pressure
DEPTH_MIN, DEPTH_MID, DEPTH_MAX = 50, 65, 80  # lattice levels a side behind the best
REQUOTE = 0.10  # a posted size is re-quoted when its target moved by more than this
REDRAW_P = 0.02  # chance a step that a top level's own size factor is redrawn
SPREADS = (1, 2, 3)
SPREAD_P = (0.6, 0.3, 0.1)
SPREAD_REDRAW_P = 0.1
RECV_DELAY_NS = 5_000_000
JITTER_NS = 2_000_000
IMBALANCE_LEVELS = 5  # the measured imbalance: top 5 levels a side


@dataclass(frozen=True)
class SymbolSpec:
    """One synthetic symbol: prices in ticks of 0.01, quantities in its step size."""

    symbol: str
    start_price: float
    qty_decimals: int  # 4: steps of 0.0001 (ETH); 5: 0.00001 (BTC)
    lattice_ticks: int  # spacing of the levels behind the best
    base_qty: float  # median size of a top level
    trade_qty: float  # median trade size
    first_update_id: int
    first_trade_id: int


ETH = SymbolSpec("ETHUSDT", 2500.00, 4, 10, 1.5, 0.05, 35_000_000_000, 1_500_000_000)
BTC = SymbolSpec("BTCUSDT", 60000.00, 5, 200, 0.06, 0.002, 48_000_000_000, 3_500_000_000)
SYMBOLS = (ETH, BTC)


def sigma_null(strength: float = 1.0) -> float:
    """The null market's per-sqrt(s) volatility: planted's 10-s variance, spread evenly."""
    mu = strength * MU_PER_STRENGTH
    return math.sqrt(SIGMA**2 + mu**2 * _ou_integral_var(VOL_HORIZON_S) / VOL_HORIZON_S)


def _ou_integral_var(h: float) -> float:
    """Var of the integral of a unit-variance OU process over ``h`` seconds."""
    return 2 * TAU_S**2 * (h / TAU_S - 1 + math.exp(-h / TAU_S))


def expected_vol(market: str, strength: float = 1.0, horizon_s: float = VOL_HORIZON_S) -> float:
    """Standard deviation of ETHUSDT's log return over ``horizon_s`` implied by the mechanism."""
    mu = strength * MU_PER_STRENGTH
    if market == "planted":
        return math.sqrt(SIGMA**2 * horizon_s + mu**2 * _ou_integral_var(horizon_s))
    return sigma_null(strength) * math.sqrt(horizon_s)


def expected_corr_fwd(market: str, strength: float = 1.0, horizon_s: float = FWD_HORIZON_S) -> float:
    """corr(x now, ETHUSDT's log return over the next ``horizon_s``) implied by the mechanism.

    Cov = mu * tau * (1 - e^(-H/tau)) since E[x_s | x_0] = x_0 e^(-s/tau) and Var x = 1.
    """
    if market != "planted" or strength == 0:
        return 0.0
    mu = strength * MU_PER_STRENGTH
    return mu * TAU_S * (1 - math.exp(-horizon_s / TAU_S)) / expected_vol("planted", strength, horizon_s)


@dataclass
class SymbolCounts:
    """Lines written for one symbol, by kind."""

    lines: int = 0
    trades: int = 0
    diffs: int = 0
    book_tickers: int = 0
    snapshots: int = 0
    buys: int = 0


@dataclass
class SynthSummary:
    """What was written and what the data shows (measured on ETHUSDT's published book).

    ``corr_x_fwd30`` / ``corr_imbalance_fwd30``: correlation of the hidden pressure / the
    observable top-5 book imbalance ``(bids - asks) / (bids + asks)`` now with the log
    return of the mid over the next 30 s, sampled every 100 ms (None when the session is
    too short). ``vol_10s``: realised volatility, the root mean square of the mid's 10-s
    log returns (overlapping). ``expected_*``: the same from the mechanism's formulas.
    """

    path: str
    market: str
    seed: int
    strength: float
    minutes: float
    lines: int
    per_symbol: dict[str, SymbolCounts] = field(default_factory=dict)
    sigma_price: float = 0.0
    mu: float = 0.0
    corr_x_fwd30: float | None = None
    corr_imbalance_fwd30: float | None = None
    vol_10s: float | None = None
    expected_corr_x_fwd30: float = 0.0
    expected_vol_10s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def line(self) -> str:
        """One line for the terminal."""

        def f(v: float | None, pct: bool = False) -> str:
            if v is None:
                return "n/a"
            return f"{v * 100:.3f}%" if pct else f"{v:+.3f}"

        syms = ", ".join(f"{s} {c.trades} trades {c.diffs} diffs" for s, c in self.per_symbol.items())
        return (f"synth {self.market} seed {self.seed} strength {self.strength:g}, {self.minutes:g} min: "
                f"{self.lines} lines ({syms}); ETHUSDT corr(x, next 30 s) {f(self.corr_x_fwd30)} "
                f"(expected {f(self.expected_corr_x_fwd30)}), corr(imbalance5, next 30 s) "
                f"{f(self.corr_imbalance_fwd30)}, 10-s vol {f(self.vol_10s, True)} "
                f"(expected {f(self.expected_vol_10s, True)}) -> {self.path}")


# ---------------------------------------------------------------------------- numbers


@functools.lru_cache(maxsize=1 << 16)
def _price_str(ticks: int) -> str:
    """0.01 ticks -> Binance's 8-decimal spelling (``250001`` -> ``2500.01000000``)."""
    return f"{ticks // 100}.{ticks % 100:02d}000000"


def _qty_formatter(decimals: int) -> Callable[[int], str]:
    """Step units -> Binance's 8-decimal spelling (``1234`` at 4 decimals -> ``0.12340000``)."""
    unit = 10**decimals
    pad = "0" * (8 - decimals)

    @functools.lru_cache(maxsize=1 << 16)
    def fmt(units: int) -> str:
        return f"{units // unit}.{units % unit:0{decimals}d}{pad}"

    return fmt


# ---------------------------------------------------------------------------- one symbol


class _SymbolSim:
    """One symbol's latent pressure, mid, book and flow. Prices in ticks, sizes in steps."""

    def __init__(self, spec: SymbolSpec, steps: int, rngs: dict[str, np.random.Generator], mu: float,
                 sigma: float) -> None:
        self.spec = spec
        self.unit = 10**spec.qty_decimals
        self.qty = _qty_formatter(spec.qty_decimals)
        self.stream = spec.symbol.lower()
        n = steps + 1
        a = math.exp(-DT / TAU_S)
        b = math.sqrt(1 - a * a)
        z = rngs["x"].standard_normal(n)
        x = np.empty(n)
        x[0] = z[0]  # start in the stationary law
        for k in range(1, n):  # sequential by nature; ~20k steps a second of data
            x[k] = a * x[k - 1] + b * z[k]
        self.x = x
        eps = rngs["eps"].standard_normal(n)
        # r_k is the move from step k-1 to k, driven by the pressure observed at k-1.
        r = np.zeros(n)
        r[1:] = mu * x[:-1] * DT + sigma * math.sqrt(DT) * eps[1:]
        self.log_mid = math.log(spec.start_price * 100) + np.cumsum(r)  # log of the mid in ticks
        # Spread: a sticky three-state chain, the same draws in both markets.
        sp = rngs["spread"]
        redraw = sp.random(n) < SPREAD_REDRAW_P
        choice = sp.choice(len(SPREADS), size=n, p=SPREAD_P)
        spread = np.empty(n, dtype=np.int64)
        cur = SPREADS[int(choice[0])]
        for k in range(n):
            if redraw[k]:
                cur = SPREADS[int(choice[k])]
            spread[k] = cur
        self.spread = spread
        # Flow: counts, times inside the step, side draws and sizes, all drawn up front so
        # the trade stream does not depend on the prices (equal in both markets).
        tr = rngs["trades"]
        self.counts = tr.poisson(TRADES_PER_S * DT, n)
        total = int(self.counts.sum())
        self.t_off = tr.integers(1, STEP_MS + 1, size=total)  # ms into the step; sorted per step
        self.side_u = tr.random(total)
        self.size_draw = np.maximum(1, np.round(spec.trade_qty * self.unit * tr.lognormal(0.0, 1.0, total))).astype(np.int64)
        self.trade_cursor = 0
        # Book noise: per-level persistent factors, redrawn at random for the top levels.
        self.book_rng = rngs["book"]
        self.churn = rngs["churn"]  # drawn a step at a time: a long session stays small
        self.base_units = spec.base_qty * self.unit
        self.bids: dict[int, int] = {}  # price -> posted size
        self.asks: dict[int, int] = {}
        self.bid_noise: dict[int, float] = {}  # price -> the level's own lognormal factor
        self.ask_noise: dict[int, float] = {}
        self.best: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.bid_lo = self.ask_hi = 0  # the far ends of the lattice (set at the snapshot)
        self.update_id = spec.first_update_id
        self.trade_id = spec.first_trade_id
        self.first_diff = True
        self.mid_obs = np.empty(n)
        self.imbalance = np.empty(n)
        self.counters = SymbolCounts()

    # -- book --------------------------------------------------------------------------

    def _targets(self, k: int) -> tuple[list[int], set[int], list[int], set[int]]:
        """Bids and asks at step k: the top levels best first, and every price a side holds."""
        mt = math.exp(self.log_mid[k])
        s = int(self.spread[k])
        bb = round(mt - s / 2)
        ba = bb + s
        g = self.spec.lattice_ticks
        b1 = (bb - 1) // g * g  # the lattice level strictly below the best bid
        a1 = (ba // g + 1) * g  # and strictly above the best ask
        # The far ends move only when a side leaves [DEPTH_MIN, DEPTH_MAX] lattice levels
        # (then back to DEPTH_MID), so a mid swinging back and forth does not churn them.
        if not DEPTH_MIN <= (b1 - self.bid_lo) // g + 1 <= DEPTH_MAX:
            self.bid_lo = b1 - (DEPTH_MID - 1) * g
        if not DEPTH_MIN <= (self.ask_hi - a1) // g + 1 <= DEPTH_MAX:
            self.ask_hi = a1 + (DEPTH_MID - 1) * g
        if self.bid_lo < 1:  # ~13 sd of a day's move: refuse rather than write a bad price
            raise ValueError(f"{self.spec.symbol}: the simulated price fell off the tick grid")
        bid_set = set(range(self.bid_lo, b1 + 1, g))
        bid_set.add(bb)
        ask_set = set(range(a1, self.ask_hi + 1, g))
        ask_set.add(ba)
        bid_top = [bb, *range(b1, b1 - (TOP_LEVELS - 1) * g, -g)]
        ask_top = [ba, *range(a1, a1 + (TOP_LEVELS - 1) * g, g)]
        return bid_top, bid_set, ask_top, ask_set

    def _new_noise(self) -> float:
        return float(self.book_rng.lognormal(0.0, SIZE_NOISE))

    def _side(self, book: dict[int, int], noise: dict[int, float], top: list[int], full: set[int], tilt: float,
              churn: np.ndarray, out: list[list[str]]) -> None:
        """Move one side to its targets; append every changed level (qty 0: removed) to ``out``."""
        qty = self.qty
        for p in sorted(book.keys() - full):
            del book[p]
            del noise[p]
            out.append([_price_str(p), qty(0)])
        base = self.base_units
        for i, p in enumerate(top):
            cur = book.get(p)
            if cur is None or churn[i] < REDRAW_P:
                noise[p] = self._new_noise()
            target = max(1, round(base * noise[p] * tilt))
            if cur is None or abs(target - cur) > REQUOTE * cur:
                book[p] = target
                out.append([_price_str(p), qty(target)])
        # New levels behind the top: posted once, then they rest until the top reaches them.
        for p in sorted(full - book.keys()):
            noise[p] = self._new_noise()
            book[p] = target = max(1, round(base * noise[p]))
            out.append([_price_str(p), qty(target)])

    def _move_book(self, k: int, b_out: list[list[str]], a_out: list[list[str]]) -> None:
        bid_top, bid_set, ask_top, ask_set = self._targets(k)
        tilt = math.exp(IMBALANCE_LOADING * self.x[k])
        churn = self.churn.random((2, TOP_LEVELS))
        self._side(self.bids, self.bid_noise, bid_top, bid_set, tilt, churn[0], b_out)
        self._side(self.asks, self.ask_noise, ask_top, ask_set, 1 / tilt, churn[1], a_out)
        self._observe(k, bid_top, ask_top)

    def snapshot(self) -> dict[str, Any]:
        """The book at step 0 as a REST depth body."""
        self._move_book(0, [], [])
        return {"lastUpdateId": self.update_id,
                "bids": [[_price_str(p), self.qty(self.bids[p])] for p in sorted(self.bids, reverse=True)],
                "asks": [[_price_str(p), self.qty(self.asks[p])] for p in sorted(self.asks)]}

    def _observe(self, k: int, bids: list[int], asks: list[int]) -> None:
        """Record what a trader sees at step k: the mid and the top-5 imbalance."""
        bb, ba = bids[0], asks[0]
        self.mid_obs[k] = (bb + ba) / 2
        vb = sum(self.bids[p] for p in bids[:IMBALANCE_LEVELS])
        va = sum(self.asks[p] for p in asks[:IMBALANCE_LEVELS])
        self.imbalance[k] = (vb - va) / (vb + va)
        self.best = (bb, self.bids[bb], ba, self.asks[ba])

    def step_book(self, k: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Diff frame data for step k (None if nothing changed) and a bookTicker if the top moved."""
        b_out: list[list[str]] = []
        a_out: list[list[str]] = []
        before = self.best
        self._move_book(k, b_out, a_out)
        changes = len(b_out) + len(a_out)
        if not changes:
            return None, None
        first = self.update_id + 1
        if self.first_diff:
            # Like a real capture: the first diff also covers ids the snapshot already
            # holds, so it straddles lastUpdateId + 1 (Binance's step 3).
            first = self.update_id - 1
            self.first_diff = False
        self.update_id += changes
        e = START_MS + k * STEP_MS
        diff = {"e": "depthUpdate", "E": e, "s": self.spec.symbol, "U": first, "u": self.update_id,
                "b": b_out, "a": a_out}
        ticker = None
        if self.best != before:
            bb, bq, ba, aq = self.best
            ticker = {"u": self.update_id, "s": self.spec.symbol, "b": _price_str(bb), "B": self.qty(bq),
                      "a": _price_str(ba), "A": self.qty(aq)}
        return diff, ticker

    # -- flow --------------------------------------------------------------------------

    def trades(self, k: int) -> list[tuple[int, dict[str, Any]]]:
        """Trades in (step k-1, step k], on the book published at k-1, by the pressure at k-1."""
        c = int(self.counts[k])
        if not c:
            return []
        j = self.trade_cursor
        self.trade_cursor += c
        p_buy = 0.5 + BUY_TILT * math.tanh(self.x[k - 1])
        bb, bq, ba, aq = self.best
        t0 = START_MS + (k - 1) * STEP_MS
        out = []
        for i in sorted(range(j, j + c), key=lambda i: (int(self.t_off[i]), i)):
            buy = bool(self.side_u[i] < p_buy)
            qty = min(int(self.size_draw[i]), aq if buy else bq)
            t = t0 + int(self.t_off[i])
            self.trade_id += 1
            self.counters.trades += 1
            self.counters.buys += buy
            out.append((t, {"e": "trade", "E": t, "s": self.spec.symbol, "t": self.trade_id,
                            "p": _price_str(ba if buy else bb), "q": self.qty(qty), "T": t,
                            "m": not buy, "M": True}))
        return out


# ---------------------------------------------------------------------------- session


def _rngs(seed: int) -> tuple[list[dict[str, np.random.Generator]], np.random.Generator]:
    """Independent streams per symbol and component, and one for the receive jitter, so
    one component's draws never shift another's (planted and null then share x, eps,
    spreads and flow)."""
    *children, jitter = np.random.SeedSequence(seed).spawn(len(SYMBOLS) + 1)
    names = ("x", "eps", "spread", "trades", "book", "churn")
    per_symbol = [{name: np.random.default_rng(s) for name, s in zip(names, child.spawn(len(names)), strict=True)}
                  for child in children]
    return per_symbol, np.random.default_rng(jitter)


def _frames(sims: list[_SymbolSim], steps: int) -> Iterator[tuple[int, _SymbolSim, bytes]]:
    """(event time ms, symbol, frame bytes) in event-time order, both symbols interleaved;
    at equal times trades come first (they traded on the book before the diff)."""
    dumps = orjson.dumps
    for k in range(1, steps + 1):
        batch: list[tuple[int, int, int, int, bytes]] = []  # (event ms, order, seq, symbol, frame)
        seq = 0
        for n, sim in enumerate(sims):
            for t, data in sim.trades(k):
                batch.append((t, 0, seq, n, dumps({"stream": f"{sim.stream}@trade", "data": data})))
                seq += 1
        e = START_MS + k * STEP_MS
        for n, sim in enumerate(sims):
            diff, ticker = sim.step_book(k)
            if diff is not None:
                sim.counters.diffs += 1
                batch.append((e, 1, seq, n, dumps({"stream": f"{sim.stream}@depth@100ms", "data": diff})))
                seq += 1
            if ticker is not None:
                sim.counters.book_tickers += 1
                batch.append((e, 1, seq, n, dumps({"stream": f"{sim.stream}@bookTicker", "data": ticker})))
                seq += 1
        batch.sort()
        for t, _, _, n, frame in batch:
            yield t, sims[n], frame




def generate(out: Path, market: str, minutes: float, seed: int, *, strength: float = 1.0) -> SynthSummary:
    """Write a synthetic two-symbol session to ``out`` (gzip for a ``.gz`` name) and
    return what was written and measured. Raises ValueError on bad arguments."""
    if market not in MARKETS:
        raise ValueError(f"market {market!r}: expected one of {', '.join(MARKETS)}")
    if not (math.isfinite(minutes) and 0 < minutes <= MAX_MINUTES):
        raise ValueError(f"minutes {minutes!r}: expected a number in (0, {MAX_MINUTES}]")
    if not (math.isfinite(strength) and strength >= 0):
        raise ValueError(f"strength {strength!r}: expected a number >= 0")
    if seed < 0:
        raise ValueError(f"seed {seed!r}: expected an integer >= 0")
    steps = max(1, round(minutes * 60 / DT))
    mu = strength * MU_PER_STRENGTH
    price_sigma = SIGMA if market == "planted" else sigma_null(strength)
    streams, jitter = _rngs(seed)
    sims = [
        _SymbolSim(ETH, steps, streams[0], mu if market == "planted" else 0.0, price_sigma),
        _SymbolSim(BTC, steps, streams[1], 0.0, SIGMA),
    ]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = 0
    last = 0
    with ExitStack() as stack:
        fh: IO[bytes] = stack.enter_context(open(out, "wb"))
        if out.name.endswith(".gz"):
            # No name and mtime 0 in the header: the bytes depend on the arguments only.
            fh = cast(IO[bytes], stack.enter_context(
                gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=5)))
        buf: list[bytes] = []
        for sim in sims:
            body = orjson.dumps({"stream": f"{sim.stream}@depthSnapshot", "data": sim.snapshot()})
            last = max(last, START_MS * 1_000_000 + RECV_DELAY_NS + int(jitter.integers(JITTER_NS)))
            buf.append(b"%d %s\n" % (last, body))
            sim.counters.snapshots += 1
            sim.counters.lines += 1
        chunk = jitter.integers(JITTER_NS, size=4096)
        ci = 0
        for t, sim, frame in _frames(sims, steps):
            if ci == len(chunk):
                chunk, ci = jitter.integers(JITTER_NS, size=4096), 0
            # One connection delivers in order: a stamp never goes back.
            last = max(last, t * 1_000_000 + RECV_DELAY_NS + int(chunk[ci]))
            ci += 1
            buf.append(b"%d %s\n" % (last, frame))
            sim.counters.lines += 1
            if len(buf) >= 4096:
                fh.write(b"".join(buf))
                lines += len(buf)
                buf.clear()
        fh.write(b"".join(buf))
        lines += len(buf)
    eth = sims[0]
    summary = SynthSummary(
        path=str(out), market=market, seed=seed, strength=strength, minutes=minutes, lines=lines,
        per_symbol={sim.spec.symbol: sim.counters for sim in sims}, sigma_price=price_sigma,
        mu=mu if market == "planted" else 0.0,
        expected_corr_x_fwd30=expected_corr_fwd(market, strength),
        expected_vol_10s=expected_vol(market, strength))
    summary.corr_x_fwd30, summary.corr_imbalance_fwd30, summary.vol_10s = measure(eth.x, eth.imbalance, eth.mid_obs)
    return summary


def measure(x: np.ndarray, imbalance: np.ndarray, mid: np.ndarray, step_s: float = DT) -> tuple[
        float | None, float | None, float | None]:
    """(corr(x, next 30-s log return), corr(imbalance, next 30-s log return), 10-s RMS vol)
    from per-step series; None where the series is too short (or constant)."""
    lm = np.log(np.asarray(mid, dtype=float))
    h = round(FWD_HORIZON_S / step_s)
    v = round(VOL_HORIZON_S / step_s)

    def corr(a: np.ndarray, b: np.ndarray) -> float | None:
        if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
            return None
        return float(np.corrcoef(a, b)[0, 1])

    cx = ci = None
    if len(lm) > h + 2:
        fwd = lm[h:] - lm[:-h]
        cx = corr(np.asarray(x, dtype=float)[:-h], fwd)
        ci = corr(np.asarray(imbalance, dtype=float)[:-h], fwd)
    vol = float(np.sqrt(np.mean((lm[v:] - lm[:-v]) ** 2))) if len(lm) > v else None
    return cx, ci, vol

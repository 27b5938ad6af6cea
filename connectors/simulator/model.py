"""The cascade market model: leveraged position books, exogenous shocks and forced-order impact.

Per symbol, leveraged positions are held as **buckets by liquidation price** on
a log-price grid (bin = 5 bp), one array for longs and one for shorts, in base
units. A position opened at price ``E`` with leverage ``L`` and maintenance
margin ``m`` is liquidated when price crosses ``E * (1 - 1/L + m)`` (long) or
``E * (1 + 1/L - m)`` (short). Every step (1 s by default):

1. price moves by the exogenous component (scheduled shocks + mean-reverting
   random flow), plus BTC's previous-step move carried into each altcoin with
   the altcoin's beta scaled by BTC's current share of derivatives OI
   (dominance: when BTC deleverages more than the altcoins, less of its move
   carries over; of BTC's forced-order impact only ``impact_carry`` carries), plus the **price impact of last step's forced orders**
   ``-impact * (long USD - short USD) / depth USD`` (depth is a fixed fraction
   of the symbol's OI; a part of the impact fades out again);
2. every bucket the price crossed is liquidated: the forced orders of this
   step are the impact of the next one -- the feedback loop of a cascade
   (shorts symmetric: a squeeze);
3. traders open new positions at the current price with leverage drawn from
   the leverage distribution (trend-chasing: after a fall more shorts open)
   and close positions at a constant rate.

All sizes are fractions of ``market_oi_usd``, so the dynamics do not depend on
it and the liquidated USD scales linearly with it. Only the crossed slice of a
book is touched per step, so a step costs O(symbols) numpy calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from connectors.simulator.scenarios import Scenario

#: leverage levels and their weights: mass at 5x-25x, tails to 2x and 100x
LEVERAGES = np.array([2, 3, 5, 7, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100], dtype=float)
LEVERAGE_WEIGHTS = np.array([2, 3, 8, 10, 14, 10, 12, 12, 9, 4, 3, 1.5, 1, 0.5], dtype=float)
LEVERAGE_WEIGHTS = LEVERAGE_WEIGHTS / LEVERAGE_WEIGHTS.sum()
BIN = 0.0005  # log-price bucket width (5 bp)
HALF_SPAN = 1.2  # the grid covers price * exp(+-1.2) around the start price
SECONDS_PER_DAY = 86_400.0
_CHUNK = 4096  # steps of random numbers drawn at once


def liquidation_distance(leverage: np.ndarray, mmr: float) -> np.ndarray:
    """Fractional distance from entry to liquidation price.

    ``1/L - mmr``; floored at ``1/(2L)`` because venues lower the maintenance
    margin of the highest-leverage tiers (a 100x position is not liquidated at
    its entry price).
    """
    return np.maximum(1.0 / leverage - mmr, 0.5 / leverage)


@dataclass(slots=True)
class StepResult:
    """What happened in one step, per symbol (arrays of length n_symbols)."""

    step: int
    t_us: int  # end of the step
    price: np.ndarray
    liq_long_base: np.ndarray  # base units force-closed this step
    liq_short_base: np.ndarray
    impact_return: np.ndarray  # log return caused by forced orders this step
    #: the part of impact_return that is the new impact of last step's forced orders, without the
    #: fade (liquidity refilling after earlier impact, which reverses a past run's move): what the
    #: truth attributes to the forced orders of a run
    forced_impact_return: np.ndarray
    exo_return: np.ndarray  # log return from shocks + random flow (+ BTC carry)
    #: the part of liq_*_base the feedback loop caused: positions whose liquidation level the
    #: price would not have reached without the forced-order impact of the last
    #: ``attribution_window_s`` (the counterfactual price = price minus that impact)
    liq_long_endo_base: np.ndarray
    liq_short_endo_base: np.ndarray
    #: the part of liq_*_base closed by a scheduled ``Burst`` (absorbed by the book: no impact)
    liq_long_absorbed_base: np.ndarray
    liq_short_absorbed_base: np.ndarray


class CascadeModel:
    """Steps the market of one scenario; deterministic for a seed."""

    def __init__(self, sc: Scenario, seed: int, *, price_impact: bool = True) -> None:
        self.sc = sc
        self.rng = np.random.default_rng(seed)
        self.price_impact = price_impact
        syms = sc.symbols
        self.n = n = len(syms)
        if syms[0].base != "BTC":
            raise ValueError("the first symbol must be BTC: it leads the market")
        self.dt = float(sc.step_s)
        p0 = np.array([s.price for s in syms])
        self.x = np.log(p0)
        self.x0 = self.x.copy()
        w = np.array([s.oi_weight for s in syms])
        self.oi0_usd = sc.market_oi_usd * w / w.sum()
        lev_usd = self.oi0_usd * sc.leveraged_fraction
        crowd = np.array([s.crowding for s in syms])
        self.long_share = np.clip(0.5 + (sc.long_share - 0.5) * crowd, 0.05, 0.95)
        self.lev_usd0 = lev_usd
        self.passive_base = self.oi0_usd * (1 - sc.leveraged_fraction) / p0
        self.depth_usd = sc.depth_fraction * self.oi0_usd
        # d log p per forced USD / depth USD; chosen so that the loop gain is ``feedback``
        # whatever the size of the leveraged book (the book only scales the USD figures)
        self.impact = sc.feedback * sc.depth_fraction / sc.leveraged_fraction
        self.beta = np.array([s.beta for s in syms])
        self.beta[0] = 0.0  # BTC carries nothing from itself
        self.sigma = np.array([s.vol_daily for s in syms]) * np.sqrt(self.dt / SECONDS_PER_DAY)
        self.kappa = sc.noise_reversion * self.dt
        self.noise = np.zeros(n)
        self.transient = np.zeros(n)
        self.ema = self.x.copy()  # 1 h EMA of log price, for trend-chasing
        self.ema_alpha = min(1.0, self.dt / 3600.0)

        self.grid0 = self.x - HALF_SPAN
        self.nb = int(2 * HALF_SPAN / BIN)
        self.book = np.zeros((2, n, self.nb))
        mmr = np.array([s.mmr for s in syms])
        dist = np.stack([liquidation_distance(LEVERAGES, m) for m in mmr])  # (n, K)
        self.long_off = np.minimum(np.floor(np.log1p(-dist) / BIN), -1).astype(np.int64)
        self.short_off = np.maximum(np.ceil(np.log1p(dist) / BIN), 1).astype(np.int64)
        self._row = np.arange(n)[:, None] * self.nb
        # the scenario's leverage mix over LEVERAGES (issue 22's presets), else the default one
        w = LEVERAGE_WEIGHTS if sc.leverage_weights is None else np.asarray(sc.leverage_weights, dtype=float)
        if w.shape != LEVERAGES.shape or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"leverage_weights must be {len(LEVERAGES)} non-negative weights over {LEVERAGES.tolist()}")
        self.leverage_weights = w / w.sum()
        self._init_book(p0)
        self.lev_base = self.book.sum(axis=2)  # (2, n)
        self.frontier_long = np.full(n, self.nb // 2, dtype=np.int64)  # long mass lies below
        self.frontier_short = np.full(n, self.nb // 2 + 1, dtype=np.int64)  # short mass at/above
        self.dominance0 = self._dominance(p0)
        self.prev_btc_move = 0.0
        self.prev_net_forced_usd = np.zeros(n)
        self.open_every = max(1, int(round(10.0 / self.dt)))
        self.decay_every = max(1, int(round(60.0 / self.dt)))
        self.open_rate = sc.close_rate if sc.open_rate is None else sc.open_rate
        self.step_index = 0
        self._shock_idx = np.array([self._symbol_index(s.symbol) for s in sc.shocks], dtype=np.int64)
        self._burst_idx = [self._symbol_index(b.symbol) for b in sc.bursts]
        # forced-order impact of the recent past (log), decaying with attribution_window_s: the
        # displacement the counterfactual "no feedback" price would not have
        self.recent_impact = np.zeros(n)
        self._impact_keep = float(np.exp(-self.dt / sc.attribution_window_s))
        self._chunk_start = -1
        #: the book slices the last step liquidated: (side, symbol, first bucket, base units per
        #: bucket), so the truth can say at which liquidation level each forced close was
        self.last_crossed: list[tuple[int, int, int, np.ndarray]] = []

    # -- set-up ---------------------------------------------------------------------------------
    def _symbol_index(self, base: str) -> int:
        for i, s in enumerate(self.sc.symbols):
            if s.base == base:
                return i
        raise ValueError(f"shock on unknown symbol {base!r}")

    def _init_book(self, p0: np.ndarray) -> None:
        """Positions opened in the past around the start price: liquidation levels spread out.

        ``1 - recent_share`` of each side's book was opened at entries ``entry_spread`` around the
        start price, ``recent_share`` at entries ``recent_entry_spread`` around it (a quiet period's
        positions, issue 22's near books); both without the levels within ``margin_gap``."""
        sc = self.sc
        parts = [(sc.entry_spread, 1.0 - sc.recent_share)]
        if sc.recent_share > 0:
            parts.append((sc.recent_entry_spread, sc.recent_share))
        centre = self.nb // 2
        # positions whose liquidation level is within ``margin_gap`` of the start
        # price are gone already: liquidated earlier, or their owners added margin
        gap = max(2, int(sc.margin_gap / BIN))
        flat = self.book.reshape(2, -1)
        for spread, part in parts:
            e = np.linspace(-3, 3, 61) * spread
            g = np.exp(-0.5 * (e / spread) ** 2)
            g /= g.sum()
            for side, offs, share in ((0, self.long_off, self.long_share), (1, self.short_off, 1 - self.long_share)):
                for s in range(self.n):
                    # bins: entry offset + leverage offset; weights: entry density x leverage weight
                    bins = centre + np.round(e[:, None] / BIN).astype(np.int64) + offs[s][None, :]
                    mass = g[:, None] * self.leverage_weights[None, :]
                    entry_px = p0[s] * np.exp(e)[:, None]
                    alive = bins <= centre - gap if side == 0 else bins >= centre + gap
                    bins = np.clip(bins, 0, self.nb - 1)
                    usd = self.lev_usd0[s] * share[s] * part
                    mass = np.where(alive, mass, 0.0)
                    mass *= usd / mass.sum()
                    np.add.at(flat[side], s * self.nb + bins.ravel(), (mass / entry_px).ravel())

    def _dominance(self, price: np.ndarray) -> float:
        oi_usd = (self.lev_base[0] + self.lev_base[1] + self.passive_base) * price
        return float(oi_usd[0] / oi_usd.sum())

    def open_interest_base(self) -> np.ndarray:
        """Open interest now: leveraged longs + leveraged shorts + hedged/unleveraged holders."""
        return self.lev_base[0] + self.lev_base[1] + self.passive_base

    def funding_8h(self) -> np.ndarray:
        """Funding rate per 8 h, following the long/short imbalance of the leveraged book."""
        lev_l, lev_s = self.lev_base
        imbalance = (lev_l - lev_s) / np.maximum(lev_l + lev_s, 1e-12)
        return np.clip(self.sc.funding_base + self.sc.funding_sensitivity * imbalance, -0.0075, 0.0075)

    # -- random numbers and schedule, drawn per chunk so a step does no small draws -------------
    def _refill(self, k: int) -> None:
        self._chunk_start = k
        self._z = self.rng.standard_normal((_CHUNK, self.n))
        rows = np.arange(k, k + _CHUNK) * self.dt
        sched = np.zeros((_CHUNK, self.n))
        moves = [(sh.start_s, sh.duration_s, sh.log_return, idx)
                 for sh, idx in zip(self.sc.shocks, self._shock_idx, strict=True)]
        # a burst's block fills a little through the book: its small move is exogenous too
        moves += [(b.start_s, b.duration_s, b.log_return, idx)
                  for b, idx in zip(self.sc.bursts, self._burst_idx, strict=True)]
        for start, duration, log_return, idx in moves:
            lo, hi = start, start + duration
            # the fraction of each step that falls inside the shock window
            overlap = np.clip(np.minimum(rows + self.dt, hi) - np.maximum(rows, lo), 0, None)
            sched[:, idx] += log_return * overlap / duration
        self._sched = sched

    def exogenous_schedule(self, k: int) -> np.ndarray:
        if self._chunk_start < 0 or not (self._chunk_start <= k < self._chunk_start + _CHUNK):
            self._refill(k)
        return self._sched[k - self._chunk_start]

    # -- one step -------------------------------------------------------------------------------
    def step(self) -> StepResult:
        k = self.step_index
        sched = self.exogenous_schedule(k)
        z = self._z[k - self._chunk_start]
        dn = -self.kappa * self.noise + self.sigma * z
        self.noise += dn
        exo = sched + dn
        if self.price_impact:
            impact = -self.impact * self.prev_net_forced_usd / self.depth_usd
        else:
            impact = np.zeros(self.n)
        # part of each impact is transient: it fades with e-folding time resilience_s
        self.transient += self.sc.resilience * impact
        fade = -self.transient * min(1.0, self.dt / self.sc.resilience_s)
        self.transient += fade
        price_now = np.exp(self.x)
        dom = self._dominance(price_now)
        carry = self.beta * (dom / self.dominance0) * self.prev_btc_move
        dx = exo + carry + impact + fade
        self.x += dx
        # altcoins follow BTC's market move and a part of its forced-order pressure;
        # their own cascades come from their own books
        self.prev_btc_move = float(exo[0] + self.sc.impact_carry * (impact[0] + fade[0]))
        self.recent_impact = self.recent_impact * self._impact_keep + impact + fade
        price = np.exp(self.x)
        i = ((self.x - self.grid0) * (1.0 / BIN)).astype(np.int64)
        if i.min() < 1 or i.max() > self.nb - 2:
            raise OverflowError(f"price left the simulated range at step {k}: {price}")
        # bin of the counterfactual price without the recent forced-order impact
        ic = np.floor((self.x - self.recent_impact - self.grid0) * (1.0 / BIN)).astype(np.int64)

        liq_long = np.zeros(self.n)
        liq_short = np.zeros(self.n)
        endo_long = np.zeros(self.n)
        endo_short = np.zeros(self.n)
        book = self.book
        crossed = self.last_crossed = []
        for s in np.nonzero(i < self.frontier_long)[0]:
            lo, hi = i[s], self.frontier_long[s]
            seg = book[0, s, lo:hi]
            liq_long[s] = seg.sum()
            # long levels below the counterfactual price were reached only through the impact
            endo_long[s] = seg[: max(0, min(hi, ic[s]) - lo)].sum()
            crossed.append((0, int(s), int(lo), seg.copy()))
            seg[:] = 0.0
            self.frontier_long[s] = lo
        for s in np.nonzero(i >= self.frontier_short)[0]:
            lo, hi = self.frontier_short[s], i[s] + 1
            seg = book[1, s, lo:hi]
            liq_short[s] = seg.sum()
            endo_short[s] = seg[max(0, ic[s] + 1 - lo):].sum()
            crossed.append((1, int(s), int(lo), seg.copy()))
            seg[:] = 0.0
            self.frontier_short[s] = hi
        self.lev_base[0] -= liq_long
        self.lev_base[1] -= liq_short
        self.prev_net_forced_usd = (liq_long - liq_short) * price
        absorbed_long, absorbed_short = self._bursts(k, price)

        self.ema += self.ema_alpha * (self.x - self.ema)
        if k % self.open_every == 0:
            self._open(i, price)
        if k % self.decay_every == 0 and k > 0:
            keep = 1.0 - self.sc.close_rate * self.dt * self.decay_every
            book *= keep
            self.lev_base *= keep
            self.passive_base *= 1.0 + self.sc.passive_drift * self.dt * self.decay_every
        self.step_index = k + 1
        return StepResult(
            step=k,
            t_us=self.sc.start_us + int(round((k + 1) * self.dt * 1e6)),
            price=price,
            liq_long_base=liq_long + absorbed_long,
            liq_short_base=liq_short + absorbed_short,
            impact_return=impact + fade,
            forced_impact_return=impact,
            exo_return=exo + carry,
            liq_long_endo_base=endo_long,
            liq_short_endo_base=endo_short,
            liq_long_absorbed_base=absorbed_long,
            liq_short_absorbed_base=absorbed_short,
        )

    def _bursts(self, k: int, price: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forced closes of the scheduled bursts in step k (base units, long and short).

        A burst is one large account closed by the venue (its own margin, not a level of the
        bucket book) whose order the book absorbs: it leaves the unleveraged/hedged part of OI and
        adds nothing to the forced-order impact, so it cannot feed a loop.
        """
        along, ashort = np.zeros(self.n), np.zeros(self.n)
        t0, t1 = k * self.dt, (k + 1) * self.dt
        for b, s in zip(self.sc.bursts, self._burst_idx, strict=True):
            part = max(0.0, min(t1, b.start_s + b.duration_s) - max(t0, b.start_s)) / b.duration_s
            if part <= 0:
                continue
            oi_base = self.lev_base[0, s] + self.lev_base[1, s] + self.passive_base[s]
            q = min(b.oi_fraction * part * oi_base, 0.5 * self.passive_base[s])
            self.passive_base[s] -= q
            (along if b.side == "long" else ashort)[s] += q
        return along, ashort

    def _open(self, i: np.ndarray, price: np.ndarray) -> None:
        """New positions at the current price; trend-chasing tilts the long/short split."""
        trend = self.x - self.ema
        share = np.clip(self.long_share + self.sc.momentum * trend, 0.05, 0.95)
        flow = self.open_rate * self.lev_usd0 * self.dt * self.open_every / price  # base units
        flat = self.book.reshape(2, -1)
        long_bins = np.clip(i[:, None] + self.long_off, 0, self.nb - 1) + self._row
        short_bins = np.clip(i[:, None] + self.short_off, 0, self.nb - 1) + self._row
        np.add.at(flat[0], long_bins.ravel(), ((flow * share)[:, None] * self.leverage_weights[None, :]).ravel())
        np.add.at(flat[1], short_bins.ravel(), ((flow * (1 - share))[:, None] * self.leverage_weights[None, :]).ravel())
        self.lev_base[0] += flow * share
        self.lev_base[1] += flow * (1 - share)
        self.frontier_long = np.maximum(self.frontier_long, i + self.long_off.max(axis=1) + 1)
        self.frontier_short = np.minimum(self.frontier_short, i + self.short_off.min(axis=1))

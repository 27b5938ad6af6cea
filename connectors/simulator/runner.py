"""Runs a scenario: model steps -> venue messages (RawMessage) + ground truth, streaming.

Per model step the runner draws the trades of every venue/symbol (Poisson,
busier when price moves), routes the step's forced closes to venues by their
liquidation share, and publishes a venue's liquidation message once its
pending forced-close USD for a symbol and side reaches
``min_liquidation_usd`` (the venue's feed then shows one aggregated forced
order for that second, as Binance's 1-per-second ``forceOrder`` snapshot does);
at the end everything still pending is flushed, so the liquidation messages
add up to every forced close. OI snapshots and mark/funding updates are
written per venue and symbol every ``oi_interval_s`` / ``mark_interval_s``.
Each liquidation also prints a trade (the forced order hitting the book).

Only one step of messages is held at a time: memory does not grow with the
run (the ground truth is per minute).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from connectors.simulator.books import TrueBooks
from connectors.simulator.depth import DepthRecords
from connectors.simulator.model import CascadeModel
from connectors.simulator.scenarios import Scenario, get_scenario
from connectors.simulator.truth import GroundTruthBuilder
from connectors.simulator.venues import WRITERS, VenueWriter
from connectors.sources.capture import RawMessage

_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<u>s|m|min|h|d|w)?\s*$")
_UNIT_S = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | float | int) -> int:
    """'90m', '6h', '1d', '3600' (seconds) -> seconds."""
    if isinstance(text, (int, float)):
        return int(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"bad duration {text!r}: use e.g. 90s, 30m, 6h, 1d")
    return int(float(m["n"]) * _UNIT_S[m["u"]])


def build_scenario(scenario: str | Scenario, **overrides: Any) -> Scenario:
    """A preset (or a Scenario) with CLI-style overrides applied.

    Recognised: ``duration`` (seconds or '6h'), ``symbols`` / ``venues`` (lists of
    names, kept in preset order), ``scale`` (multiplies trades per second),
    and any Scenario field (``trades_per_second``, ``step_s``, ``oi_interval_s``...).
    """
    sc = get_scenario(scenario) if isinstance(scenario, str) else scenario
    kw = {k: v for k, v in overrides.items() if v is not None}
    if "duration" in kw:
        kw["duration_s"] = parse_duration(kw.pop("duration"))
    if "symbols" in kw:
        want = [s.upper() for s in kw.pop("symbols")]
        unknown = set(want) - {s.base for s in sc.symbols}
        if unknown:
            raise ValueError(f"unknown symbols {sorted(unknown)}; known: {[s.base for s in sc.symbols]}")
        if "BTC" not in want:
            raise ValueError("BTC leads the market and must be simulated")
        kw["symbols"] = tuple(s for s in sc.symbols if s.base in want)
        # a shock or decoy burst on a symbol left out goes with it (macro shocks hit BTC, always kept)
        kw.setdefault("shocks", tuple(sh for sh in sc.shocks if sh.symbol.upper() in want))
        kw.setdefault("bursts", tuple(b for b in sc.bursts if b.symbol.upper() in want))
    if "venues" in kw:
        want_v = list(kw.pop("venues"))
        unknown = set(want_v) - {v.name for v in sc.venues}
        if unknown:
            raise ValueError(f"unknown venues {sorted(unknown)}; known: {[v.name for v in sc.venues]}")
        kept = [v for v in sc.venues if v.name in want_v]
        # the kept venues stand for the whole market: their shares are renormalised
        tot_oi, tot_vol, tot_liq = (sum(getattr(v, a) for v in kept) for a in ("oi_share", "volume_share", "liq_share"))
        kw["venues"] = tuple(replace(v, oi_share=v.oi_share / tot_oi, volume_share=v.volume_share / tot_vol,
                                     liq_share=v.liq_share / tot_liq) for v in kept)
    if "scale" in kw:
        kw["trades_per_second"] = kw.get("trades_per_second", sc.trades_per_second) * float(kw.pop("scale"))
    return replace(sc, **kw)


class Simulation:
    """One run: iterate ``messages()`` (or ``iter(sim)``); ``truth`` is complete once exhausted."""

    def __init__(self, scenario: str | Scenario, seed: int = 7, *, price_impact: bool = True,
                 **overrides: Any) -> None:
        self.scenario = build_scenario(scenario, **overrides)
        self.seed = seed
        self.price_impact = price_impact
        self.overrides = {k: (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items() if v is not None}
        self.truth = GroundTruthBuilder(self.scenario, seed, price_impact, self.overrides)
        self.books = TrueBooks(self.scenario)  # the liquidation map's truth (issue 22)
        self.steps_done = 0
        #: normalized book_depth records generated so far and not yet taken (take_book_depth)
        self._book_depth: list[dict[str, Any]] = []

    def take_book_depth(self) -> list[dict[str, Any]]:
        """The book_depth.v1 records (already normalized, connectors/simulator/depth.py) the run
        generated since the last call, in event-time order; call it while iterating ``messages()``
        (they are held until taken)."""
        out, self._book_depth = self._book_depth, []
        return out

    @property
    def n_steps(self) -> int:
        return self.scenario.n_steps

    def __iter__(self) -> Iterator[RawMessage]:
        return self.messages()

    def messages(self) -> Iterator[RawMessage]:
        sc = self.scenario
        model = CascadeModel(sc, self.seed, price_impact=self.price_impact)
        # messages use their own random stream: the market path does not depend on them
        rng = np.random.default_rng([self.seed, 0x5EED])
        truth = self.truth
        S, V = len(sc.symbols), len(sc.venues)
        writers: list[VenueWriter] = [WRITERS[v.name](sc.symbols, i) for i, v in enumerate(sc.venues)]
        names = [v.name for v in sc.venues]
        latency_us = [v.latency_ms * 1000 for v in sc.venues]
        # venue shares per symbol; a venue that does not list a symbol gets none of it
        listed = np.array([[w.lists(s) for w in writers] for s in range(S)], dtype=float)
        liq_share = listed * np.array([v.liq_share for v in sc.venues])
        liq_share /= liq_share.sum(axis=1, keepdims=True)
        oi_share = listed * np.array([v.oi_share for v in sc.venues])
        oi_share /= oi_share.sum(axis=1, keepdims=True)
        vol_share = listed * np.array([v.volume_share for v in sc.venues])
        vol_share /= vol_share.sum(axis=1, keepdims=True)
        tw = np.array([s.trade_weight for s in sc.symbols])
        lam = sc.trades_per_second * sc.step_s * (tw / tw.sum())[:, None] * vol_share
        typical_usd = 4_000.0 * np.sqrt(tw / tw.mean())  # median trade size (USD) per symbol
        sigma_step = np.array([s.vol_daily for s in sc.symbols]) * np.sqrt(sc.step_s / 86_400.0)
        pending = np.zeros((S, V, 2))  # base units of forced closes not yet published
        step_us = int(sc.step_s * 1e6)
        oi_every = max(1, int(round(sc.oi_interval_s / sc.step_s)))
        mark_every = max(1, int(round(sc.mark_interval_s / sc.step_s)))
        # stagger the snapshot steps of the venues so they do not all land in one step
        oi_phase = [(vi * oi_every) // max(V, 1) for vi in range(V)]
        mark_phase = [(vi * mark_every) // max(V, 1) + mark_every // 2 for vi in range(V)]
        min_usd = sc.min_liquidation_usd
        prev_price = np.array([s.price for s in sc.symbols])
        basis = np.zeros(S)
        n_steps = sc.n_steps
        sent = [0] * V
        source = f"sim:{sc.name}:{self.seed}"
        trade_fns = [w.trade for w in writers]
        depth = DepthRecords(sc, self.seed, [[w.instrument(s) if listed[s, vi] else None for s in range(S)]
                                             for vi, w in enumerate(writers)], oi_share)
        for k in range(n_steps):
            r = model.step()
            self.books.record(model, r)
            t1 = r.t_us
            self._book_depth += depth.due(k, t1, r.price, model.depth_usd, model.impact)
            t0 = t1 - step_us
            price = r.price
            dx = np.log(price / prev_price)
            prev_price = price
            truth.add_prices(t1, price, r.forced_impact_return, dx)
            truth.add_attribution(t1, (r.liq_long_endo_base + r.liq_short_endo_base) * price,
                                  (r.liq_long_absorbed_base + r.liq_short_absorbed_base) * price)
            out: list[tuple[int, int, str, str]] = []  # (received_us, venue, channel, raw)

            # -- liquidations: route to venues, publish what reached the threshold -----------
            if r.liq_long_base.any() or r.liq_short_base.any():
                w = liq_share * np.exp(0.25 * rng.standard_normal((S, V)))
                w /= w.sum(axis=1, keepdims=True)
                pending[:, :, 0] += r.liq_long_base[:, None] * w
                pending[:, :, 1] += r.liq_short_base[:, None] * w
            ready = np.argwhere(pending * price[:, None, None] >= min_usd)
            last = k == n_steps - 1
            if last:
                ready = np.argwhere(pending > 0)
            if len(ready):
                offs = rng.integers(0, step_us, size=len(ready))
                price_l = price.tolist()
                for (s, v, side), off in zip(ready.tolist(), offs.tolist(), strict=True):
                    long = side == 0
                    # forced orders fill through the book: a little worse than mid
                    px = price_l[s] * (0.9994 if long else 1.0006)
                    t_us = t0 + off
                    res = writers[v].liquidation(s, t_us // 1000, px, float(pending[s, v, side]), long)
                    if res is None:
                        if last:
                            pending[s, v, side] = 0.0
                        continue
                    raw, q_written, usd = res
                    pending[s, v, side] -= q_written
                    if pending[s, v, side] < 0 or last:
                        pending[s, v, side] = 0.0
                    truth.add_liquidation(t_us, s, v, long, usd)
                    out.append((t_us + latency_us[v], v, "ws", raw))
                    tr = writers[v].trade(s, t_us // 1000 + 1, px, q_written, not long)
                    if tr is not None:
                        out.append((t_us + 1000 + latency_us[v], v, "ws", tr))

            # -- trades: more of them, larger and one-sided when price moves --------------------
            activity = 1.0 + np.minimum(np.abs(dx) / (3 * sigma_step), 20.0)
            counts = rng.poisson(lam * activity[:, None])
            total = int(counts.sum())
            if total:
                sv = np.repeat(np.arange(S * V), counts.ravel())
                offs = rng.integers(0, step_us, size=total)
                u = rng.random(total)
                sz = rng.lognormal(0.0, 1.2, size=total)
                jitter = rng.standard_normal(total)
                p_buy = (0.5 + 0.45 * np.tanh(dx / (2 * sigma_step))).tolist()
                size_usd = (typical_usd * np.sqrt(activity)).tolist()
                price_l = price.tolist()
                # plain Python numbers in the per-message loop: numpy scalars are slow there
                for code, off, uj, szj, jit in zip(sv.tolist(), offs.tolist(), u.tolist(), sz.tolist(),
                                                   jitter.tolist(), strict=True):
                    s, v = divmod(code, V)
                    px = price_l[s] * (1.0 + 1.5e-5 * jit)
                    t_us = t0 + off
                    raw = trade_fns[v](s, t_us // 1000, px, size_usd[s] * szj / px, uj < p_buy[s])
                    if raw is not None:
                        out.append((t_us + latency_us[v], v, "ws", raw))

            # -- OI snapshots and mark/funding ------------------------------------------------
            oi_due = [vi for vi in range(V) if k % oi_every == oi_phase[vi]]
            mark_due = [vi for vi in range(V) if k % mark_every == mark_phase[vi] % mark_every]
            if oi_due or mark_due:
                basis = 0.9 * basis + 0.1 * 2e-4 * rng.standard_normal(S)
                funding = model.funding_8h()
                mark = price * (1.0 + basis)
                t_ms = t1 // 1000
                if oi_due:
                    oi = model.open_interest_base()
                    for vi in oi_due:
                        for s in range(S):
                            if not listed[s, vi]:
                                continue
                            msgs, base, usd = writers[vi].snapshots(s, t_ms, float(mark[s]), float(price[s]),
                                                                    float(funding[s]), float(oi[s] * oi_share[s, vi]))
                            truth.add_oi(t1, s, vi, base, usd)
                            for ch, raw in msgs:
                                out.append((t1 + latency_us[vi], vi, ch, raw))
                for vi in mark_due:
                    for s in range(S):
                        if not listed[s, vi]:
                            continue
                        for ch, raw in writers[vi].marks(s, t_ms, float(mark[s]), float(price[s]), float(funding[s])):
                            out.append((t1 + latency_us[vi], vi, ch, raw))

            if out:
                out.sort(key=lambda m: m[0])
                for rec_us, v, ch, raw in out:
                    sent[v] += 1
                    yield RawMessage(names[v], rec_us, raw, source, ch)
            self.steps_done = k + 1
        for v, name in enumerate(names):
            truth.messages[name] = sent[v]
        truth.finish()["liquidation_books"] = self.books.export()


def simulate(scenario: str, seed: int = 7, **overrides: Any) -> Iterator[RawMessage]:
    """Raw venue messages of a preset run, in receive order (see :class:`Simulation` for the truth)."""
    return Simulation(scenario, seed, **overrides).messages()


def paced(messages: Iterator[RawMessage], speed: float) -> Iterator[RawMessage]:
    """Replay at ``speed`` x real time (event time advances speed seconds per wall second)."""
    t_wall0 = time.monotonic()
    t_evt0: int | None = None
    for msg in messages:
        if t_evt0 is None:
            t_evt0 = msg.received_at_us
        due = (msg.received_at_us - t_evt0) / 1e6 / speed
        lag = due - (time.monotonic() - t_wall0)
        if lag > 0.002:
            time.sleep(lag)
        yield msg

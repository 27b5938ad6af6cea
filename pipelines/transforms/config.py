"""AnalyticsConfig: every threshold of the analytics in one typed place.

Defaults run as they are; the CLI/jobs override them with ``AnalyticsConfig.from_env()``
(``LIQSTREAM_<FIELD>`` environment variables) or ``dataclasses.replace``. Each field's meaning
is defined in docs/analytics.md under the same name.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

MINUTE_US = 60_000_000
#: USD sums are accumulated as int64 micro-USD (each event rounded once), so totals are exact
#: and independent of batching / merge order. 2**63 micro-USD = $9.2 trillion per cell: ample.
USD_MICROS = 1_000_000
#: base-unit sizes are summed exactly in 1e-12 units (each event rounded once; finer than any venue's
#: lot size), so a bar's volume_base does not depend on how its minute's trades were split into cycles
BASE_SCALE = 12


@dataclass(frozen=True)
class AnalyticsConfig:
    # --- bars ---------------------------------------------------------------------------------
    bar_seconds: int = 60
    #: events whose event_time is older than (watermark - allowed_lateness_s) go to late_events
    #: instead of updating bars; within it they update (upsert) the affected minute.
    allowed_lateness_s: int = 600
    #: the watermark follows a cycle's latest bar only when that bar is within this of the current
    #: watermark or of another of the cycle's bars: one outlier event (a forged time a foreign
    #: producer wrote) cannot move it and send every real event after it to late_events (ADR 010)
    watermark_max_jump_s: int = 600
    #: instrument kinds aggregated across venues into bars_1m_symbol (and so into cascades, OI
    #: deltas per symbol, contagion). Dated futures are left out: their OI converges to 0 at
    #: expiry and would read as deleveraging.
    symbol_kinds: tuple[str, ...] = ("perpetual",)
    #: reference venues for the cross-venue price (first one that has a bar for the base in the
    #: window wins, forward-filled); a volume-weighted price is published beside it.
    price_reference_venues: tuple[str, ...] = (
        "binance-futures",
        "bybit",
        "okx",
        "hyperliquid",
        "deribit",
        "binance-delivery",
    )
    #: a venue's last OI (and last close) is carried forward at most this many minutes when a
    #: minute has no OI snapshot (venues poll OI every few seconds to minutes).
    ffill_max_minutes: int = 30

    # --- cascades -----------------------------------------------------------------------------
    #: a minute is "hot" for a side when its liquidated USD >= hot_oi_bp basis points of the
    #: scope's reference OI and >= the floor x hot_oi_bp / episode_oi_bp
    hot_oi_bp: float = 0.5  # the simulator truth's definition since 7c452bb (docs/simulator.md)
    #: a run of hot minutes is an episode once its liquidated USD reaches episode_oi_bp basis
    #: points of the scope's reference OI (before the run) and the scope's floor
    episode_oi_bp: float = 5.0
    floor_usd_symbol: float = 500_000.0
    floor_usd_market: float = 5_000_000.0
    #: the OI the thresholds scale with: the scope's highest OI over this many minutes before
    #: (so a slow deleveraging or a crash that just removed leverage does not lower the bar);
    #: a week, as measured on simulator preset B. Streaming cycles pass it from OI_REFERENCE_SQL
    #: instead of reading a week of bars.
    oi_reference_minutes: int = 10_080
    #: a run ends after this many consecutive non-hot minutes (shorter gaps are bridged)
    quiet_gap_minutes: int = 4
    #: optional filters, 0 = off. Hot minutes must also exceed baseline_multiple x the side's
    #: mean liquidated USD per minute over the baseline_minutes before; an episode is confirmed
    #: only once price has moved >= min_adverse_move_pct against the liquidated side since the
    #: run started. Off by default: on the simulator presets they delay or miss second waves
    #: (the baseline is still elevated by the first) without removing false episodes.
    baseline_minutes: int = 60
    baseline_multiple: float = 0.0
    min_adverse_move_pct: float = 0.0
    #: cascade vs liquidation burst (docs/analytics.md, "Cascade or burst"): an episode is a
    #: cascade only when price moved against the liquidated side by >= cascade_move_z standard
    #: deviations of the scope's own 1-minute returns over the vol_lookback_minutes before the
    #: run (scaled by sqrt(duration)), and by >= cascade_min_move_pct_per_bp percent per basis
    #: point of reference OI liquidated (the forced flow moved price, it was not absorbed).
    #: A third criterion asks whether the forced closes were large enough to have caused a move
    #: beyond the noise themselves (the loop, not an exogenous move that liquidations followed):
    #: cascade_impact_pct_per_bp (the price impact of forced orders per bp of OI closed, the
    #: market's depth) x the run's bp liquidated must reach cascade_min_impact_z standard
    #: deviations over the run (x sqrt(duration)).
    #: Otherwise the run is a liquidation_burst: kept, never at cascade severity (0 turns a
    #: criterion off; with all off every episode is a cascade, the USD-only rule). With fewer
    #: than vol_min_points returns before the run, the volatility of the window so far is used.
    #: 720 (12 h; 240 before ADR 024): the impact z compares the book's expected move with this
    #: volatility, and a 4-hour median's sampling error (+-15-20 % against the scope's whole noise
    #: on the tuning seeds) was what let slow-deleveraging runs pass and true cascades fail
    vol_lookback_minutes: int = 720
    vol_min_points: int = 30
    #: the volatility reference's estimator (ADR 027, docs/analytics.md "The volatility reference"):
    #: the scale of each minute's return net of its forced orders' expected move (the book's, else
    #: the prior's), about the window's median (the MAD), re-taken without the minutes beyond
    #: vol_trim_sigmas first-pass sigmas (a scheduled shock, a cascade; 4: normal noise loses
    #: ~6e-5 of its minutes, a 0.6 %-a-minute shock against 0.08 % noise is 7 sigmas out);
    #: False / False / 0 = median |return| / 0.6745, the reference before ADR 027
    vol_net_of_impact: bool = True
    vol_centered: bool = True
    vol_trim_sigmas: float = 4.0
    cascade_move_z: float = 8.0
    cascade_min_move_pct_per_bp: float = 0.02
    cascade_impact_pct_per_bp: float = 0.08
    #: 4.95 with the ADR 027 volatility reference (4.6 with median |return|, ADR 024; 3.0 with the
    #: prior alone): the middle of the cuts that score every tuning run (seeds 1-3) clean,
    #: 4.60-5.31 (D-3 ETH's slow run at 4.599, D-1 LINK's squeeze at 5.311); the truth's own
    #: cut is 5 (docs/analytics.md)
    cascade_min_impact_z: float = 4.95
    #: depth-aware impact (ADR 024, docs/analytics.md "Impact from the book"): the expected move
    #: of a minute's forced orders is cascade_book_walk_coef x liquidated USD / the USD resting
    #: within 100 bp of the mid on the side they hit (long liquidations sell into the bids, short
    #: squeezes buy the asks), in percent -- a linear book moves price 1 % per its 100 bp depth.
    #: Each venue's last book_depth is carried forward at most depth_max_stale_minutes, then
    #: unknown; the scope's depth is the sum over its venues with a known depth. A minute with
    #: no known depth falls back to cascade_impact_pct_per_bp x bp of OI liquidated.
    cascade_book_walk_coef: float = 1.0
    depth_max_stale_minutes: int = 5
    #: severity levels: the episode's liquidated USD crossing tier x its episode threshold
    #: raises the level by one and emits an escalation alert
    severity_tiers: tuple[float, ...] = (1.0, 5.0, 25.0, 125.0)
    #: the stream job detects cascades on closed minutes (the watermark passed their end) and
    #: raises a cascade_watch as soon as the open minute's partial bar meets the same cascade test,
    #: confirmed or withdrawn at the minute's close (ADR 018). False: every stored minute is analysed
    #: each cycle, partial or not (before ADR 018).
    open_minute_watch: bool = True
    #: longest episode kept open across cycles (sets the cascades lookback)
    max_episode_minutes: int = 1_440
    #: minutes before the episode start included in the feedback regression
    feedback_pre_minutes: int = 30
    feedback_min_points: int = 8
    market_scope: str = "market"

    # --- OI deltas ----------------------------------------------------------------------------
    oi_spans_minutes: tuple[tuple[str, int], ...] = (
        ("1h", 60),
        ("4h", 240),
        ("24h", 1_440),
        ("7d", 10_080),
        ("30d", 43_200),
    )
    oi_every_minutes: int = 5
    #: |OI change| below this percent is labelled "flat"
    oi_flat_pct: float = 0.25

    # --- contagion ----------------------------------------------------------------------------
    reference_base: str = "BTC"
    #: trailing windows (minutes) scored at each as-of minute: intraday and the whole day
    beta_windows_minutes: tuple[int, ...] = (240, 1_440)
    beta_min_points: int = 30
    contagion_every_minutes: int = 5
    #: dominance = w * OI dominance + (1 - w) * volume dominance
    dominance_oi_weight: float = 0.5
    #: weights of the exposure terms; calibrated on simulator preset A (seeds 1-2), where OI/volume
    #: and funding carry little of the simulated crowding: beta and liquidation intensity rank
    #: the altcoins, leverage and funding only tilt (docs/analytics.md)
    leverage_exponent: float = 0.25
    #: funding is per venue interval as sent (see docs); this rate counts as "one unit" of crowding
    funding_norm: float = 0.0001
    funding_weight: float = 0.1
    liq_intensity_weight: float = 1.0

    # --- liquidation map (pipelines/transforms/liqmap.py, ADR 015) --------------------------------
    #: off: the jobs neither estimate nor store the map (liquidation_levels / _fuel stay empty; bench/liqmap.py)
    liqmap_enabled: bool = True
    #: log-price bucket width of the estimated books and of liquidation_levels, basis points
    liqmap_bucket_bp: float = 20.0
    #: the grid spans price * exp(+-this) around the warm-up's first price (beyond: the edge buckets)
    liqmap_grid_half_span: float = 0.7
    #: leverage tiers and the prior mix over them (every venue unless liqmap_venue_leverage_weights
    #: names it); calibrated online from realized liquidations at liqmap_calibration_rate (0 = off)
    #: (the common steps of venues' leverage selectors: 25 -> 50 -> 100x alone left mass at 30-40x or
    #: 75x no tier to sit in, ADR 026; the prior has a mean of 17x, as the 7-tier one had)
    liqmap_leverage_tiers: tuple[float, ...] = (3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 75.0, 100.0)
    liqmap_leverage_weights: tuple[float, ...] = (10.0, 15.0, 10.0, 20.0, 10.0, 12.0, 8.0, 4.0, 4.0, 3.0, 2.0, 2.0)
    #: per-venue prior mixes: ((exchange, (w per tier...)), ...); env: "ex:w,w,...;ex2:w,..."
    liqmap_venue_leverage_weights: tuple[tuple[str, tuple[float, ...]], ...] = ()
    #: how far each crossing moves the mix towards the calibration's EM estimate (1 = to it; ADR 026)
    liqmap_calibration_rate: float = 1.0
    #: the calibration's tiers never crossed keep their share of the mix, the crossed ones share the
    #: rest by their realized / removed rates (ADR 041; False: every tier's EM estimate relative to
    #: the venue's realized / removed ratio so far, ADR 026, which shrank the uncrossed tiers)
    liqmap_calibration_keep_uncrossed: bool = True
    #: maintenance margin rate in the liquidation distance max(1/L - mmr, 1/(2L))
    liqmap_mmr: float = 0.005
    #: share of the book that closes and reopens at the minute's VWAP per day (gross flow under net OI);
    #: 0.5 (a leveraged position held ~2 days) since ADR 048, 1.0 before
    liqmap_turnover_per_day: float = 0.5
    #: long share of new OI = 0.5 + tilt * taker imbalance / 2 (imbalance = (buy - sell) / (buy + sell))
    liqmap_taker_tilt: float = 1.0
    #: the crossing removes only the part of the low's (high's) bucket the price reached, the bucket's
    #: levels taken as spread evenly over it below (above) the deepest point already crossed in it
    #: (False: the whole bucket, as before ADR 034; the fixed-tier baseline keeps that)
    liqmap_partial_crossing: bool = True
    #: a venue's first OI (positions opened before the data) is spread over entries log-normal
    #: around the first price with this std (0 = all at the price); crossed levels dropped
    liqmap_initial_entry_spread: float = 0.03
    #: ... and so are its levels within this fraction of the first price (ADR 048): a prior that
    #: positions that close to liquidation have been liquidated already or their owners added margin.
    #: 0 (ADR 050) = only the crossed levels: nothing in the data says how far the unseen past price
    #: went; 0.03 fitted the simulator's presets (no level within 3.5 %) and lost on books with levels
    #: near the price (scenarios.INITIAL_BOOKS["near"])
    liqmap_initial_margin_gap: float = 0.0
    #: every minute's book is rebuilt from the aligned anchor floor(t / W) * W - W (W = this):
    #: stream and backfill agree, a cycle reads 2 W of bars back
    liqmap_warmup_minutes: int = 1_440
    #: liquidation_levels: a snapshot every this many minutes (aligned), buckets within range_pct
    liqmap_every_minutes: int = 30
    liqmap_range_pct: float = 10.0
    #: liquidation_fuel: a cluster is a bucket >= this x the side's mean bucket USD within range_pct
    liqmap_cluster_multiple: float = 3.0
    #: minutes of 1-minute returns behind the scope's recent (hourly) volatility
    liqmap_vol_minutes: int = 60
    #: liquidation_fuel rows are computed this many minutes at a time, vectorized over the minutes
    #: (ADR 049; the same numbers as one at a time): a base's rows of such a batch are held until it
    #: is complete (memory ~ this x the rows of a minute); 1 = one minute at a time
    liqmap_fuel_batch_minutes: int = 1_440
    #: the analytic marts' Parquet writers write a file every this many rows (0 = one per bundle):
    #: a backfill's analytics are one bundle over the whole range, whose rows (360k liquidation
    #: levels at 90 days) were held as dicts until it ended (docs/performance.md, backfill memory)
    sink_flush_rows: int = 20_000

    @property
    def bar_us(self) -> int:
        return self.bar_seconds * 1_000_000

    @property
    def allowed_lateness_us(self) -> int:
        return self.allowed_lateness_s * 1_000_000

    @property
    def watermark_max_jump_us(self) -> int:
        return self.watermark_max_jump_s * 1_000_000

    def floor_usd(self, scope: str) -> float:
        return self.floor_usd_market if scope == self.market_scope else self.floor_usd_symbol

    def lookback_minutes(self) -> dict[str, int]:
        """Minutes of bars a job must read back before the first touched minute, per analytic.

        Cascades need the baseline and the longest episode still open; OI deltas need the
        longest span (+ forward-fill tolerance); contagion its beta window.
        """
        cascade = (max(self.baseline_minutes, self.vol_lookback_minutes) + self.max_episode_minutes
                   + self.quiet_gap_minutes)
        return {
            "bars_1m_symbol": self.ffill_max_minutes,
            # + oi_reference_minutes when DetectCascades gets no oi_reference input (a backfill)
            "cascades": cascade + self.ffill_max_minutes,
            "cascades_oi_reference": self.oi_reference_minutes,
            "oi_deltas": max(m for _, m in self.oi_spans_minutes) + self.ffill_max_minutes,
            "contagion": max(self.beta_windows_minutes) + 1 + self.ffill_max_minutes,
            # the hour of volatility of the first emitted minute (+ its carried prices); the book itself
            # continues from liquidation_map_state, or warms up (liqmap_warmup_minutes) without one
            "liquidation_map": self.liqmap_vol_minutes + self.ffill_max_minutes,
        }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AnalyticsConfig:
        """Override scalar fields from LIQSTREAM_<FIELD_NAME_UPPER> variables."""
        env = os.environ if environ is None else environ
        changes: dict = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"LIQSTREAM_{f.name.upper()}")
            if raw is None:
                continue
            default = getattr(cls(), f.name)
            if isinstance(default, bool):
                changes[f.name] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                changes[f.name] = int(raw)
            elif isinstance(default, float):
                changes[f.name] = float(raw)
            elif isinstance(default, str):
                changes[f.name] = raw
            elif isinstance(default, tuple) and f.name in ("symbol_kinds", "price_reference_venues"):
                changes[f.name] = tuple(x.strip() for x in raw.split(",") if x.strip())
            elif f.name in ("severity_tiers", "liqmap_leverage_tiers", "liqmap_leverage_weights"):
                changes[f.name] = tuple(float(x) for x in raw.split(","))
            elif f.name == "liqmap_venue_leverage_weights":
                changes[f.name] = tuple(
                    (ex.strip(), tuple(float(x) for x in ws.split(",")))
                    for ex, ws in (part.split(":", 1) for part in raw.split(";") if part.strip()))
        return dataclasses.replace(cls(), **changes)

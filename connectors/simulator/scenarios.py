"""Scenario presets: symbols, venues, leverage build-up and the exogenous shocks of each day.

Every preset stands for the **whole derivatives market** of its day: the four
simulated venues carry 100% of the market's open interest and liquidations
(their shares below sum to 1), so the USD figures reported in
``../shared/MARKET-EVENTS.md`` for "all derivatives venues" are the targets of
the simulated totals directly. ``market_oi_usd`` is that market's perpetual OI
at the start; the liquidation totals scale linearly with it (book, depth and
flows are all expressed as fractions of it, so the price dynamics do not
depend on it), which is how the presets are calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One perpetual traded on every simulated venue."""

    base: str
    price: float  # start price (USD)
    beta: float  # sensitivity to BTC's move (1 for BTC itself)
    oi_weight: float  # share of market OI before normalisation (BTC's is its dominance)
    vol_daily: float  # idiosyncratic daily volatility of the random flow (log)
    price_decimals: int
    qty_decimals: int
    mmr: float = 0.005  # maintenance margin rate
    crowding: float = 1.0  # multiplies the scenario's long crowding (own leverage build-up)
    trade_weight: float = 1.0  # share of trade messages


@dataclass(frozen=True, slots=True)
class VenueSpec:
    name: str
    oi_share: float
    volume_share: float
    liq_share: float  # share of forced orders routed to the venue
    latency_ms: int  # received_at - event time


@dataclass(frozen=True, slots=True)
class Shock:
    """An exogenous price move spread evenly over [start_s, start_s + duration_s)."""

    kind: str  # macro | whale_sell | whale_buy | flow | price_only (decoy) | grind (decoy)
    start_s: float  # seconds from the scenario start
    duration_s: float
    log_return: float  # total exogenous log move on ``symbol`` over the window
    symbol: str = "BTC"  # macro shocks hit BTC; altcoins follow through the carry
    note: str = ""


@dataclass(frozen=True, slots=True)
class Burst:
    """A decoy: one large account force-closed by the venue and absorbed by the book.

    ``oi_fraction`` of the symbol's OI is closed on ``side`` over the window (an exchange-side
    event: its own margin, not a level of the leveraged book), with only the small exogenous
    ``log_return`` of a block filling through a deep book; the closes add no forced-order
    impact, so they feed no loop (docs/simulator.md, "Decoys").
    """

    symbol: str
    start_s: float
    oi_fraction: float = 0.02
    side: str = "long"
    duration_s: float = 60.0
    log_return: float = -0.002
    note: str = "flat liquidation burst (decoy)"


DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    # base, price, beta, oi_weight, vol_daily, price dec, qty dec, mmr, crowding, trade weight
    SymbolSpec("BTC", 63_900.0, 1.00, 0.46, 0.012, 1, 3, 0.004, 1.00, 3.0),
    SymbolSpec("ETH", 3_290.0, 1.05, 0.22, 0.015, 2, 3, 0.005, 1.10, 2.0),
    SymbolSpec("SOL", 150.0, 1.25, 0.08, 0.020, 3, 1, 0.010, 1.30, 1.2),
    SymbolSpec("XRP", 0.6000, 1.15, 0.06, 0.020, 4, 0, 0.010, 1.15, 0.8),
    SymbolSpec("DOGE", 0.12000, 1.30, 0.05, 0.022, 5, 0, 0.010, 1.35, 0.8),
    SymbolSpec("BNB", 580.0, 0.60, 0.04, 0.010, 2, 2, 0.010, 0.60, 0.6),
    SymbolSpec("AVAX", 30.0, 1.20, 0.02, 0.022, 3, 1, 0.010, 1.10, 0.4),
    SymbolSpec("LINK", 15.0, 1.15, 0.02, 0.022, 3, 1, 0.010, 1.05, 0.4),
)

DEFAULT_VENUES: tuple[VenueSpec, ...] = (
    VenueSpec("binance-futures", 0.40, 0.42, 0.42, 15),
    VenueSpec("bybit", 0.25, 0.24, 0.25, 25),
    VenueSpec("okx", 0.20, 0.20, 0.18, 30),
    VenueSpec("hyperliquid", 0.15, 0.14, 0.15, 60),
)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    start: datetime
    duration_s: int
    step_s: float = 2.0
    symbols: tuple[SymbolSpec, ...] = DEFAULT_SYMBOLS
    venues: tuple[VenueSpec, ...] = DEFAULT_VENUES
    shocks: tuple[Shock, ...] = ()
    #: decoy bursts: forced closes absorbed with ~no move (see Burst)
    bursts: tuple[Burst, ...] = ()
    #: ground-truth attribution: a liquidation is caused by the feedback loop when the price
    #: without the forced-order impact of the recent past (decaying with this time constant)
    #: would not have reached the position's liquidation level (docs/simulator.md)
    attribution_window_s: float = 1800.0
    #: perpetual OI of the whole market at the start (USD)
    market_oi_usd: float = 90e9
    #: share of OI held by leveraged (liquidatable) traders; the rest is hedged / low-risk
    leveraged_fraction: float = 0.05
    #: the leveraged book's mix over model.LEVERAGES (2..100x); None = model.LEVERAGE_WEIGHTS
    #: (mass at 5-25x). LEVERAGE_MIXES names the ones the liquidation map is scored on (issue 22)
    leverage_weights: tuple[float, ...] | None = None
    #: share of the leveraged book that is long (0.5 = balanced; A: crowded longs)
    long_share: float = 0.5
    #: spread of past entry prices around the start price (log), shapes the initial book
    entry_spread: float = 0.03
    #: strength of the liquidation -> price -> liquidation loop: the price impact of
    #: forced orders is d log p = -feedback * (depth/leveraged) * net forced USD / depth USD,
    #: i.e. liquidating 1% of the leveraged book moves price by feedback * 1%
    feedback: float = 0.12
    #: share of BTC's forced-order impact that carries into altcoins (with their beta)
    impact_carry: float = 0.3
    #: at the start no position is liquidatable within this distance of the price
    margin_gap: float = 0.015
    #: a share of the initial leveraged book opened recently, in a quiet period around the start
    #: price (entries log-normal with ``recent_entry_spread``); ``margin_gap`` applies to it too.
    #: 0 = every initial entry from ``entry_spread`` (the presets). INITIAL_BOOKS["near"] uses it
    #: (issue 22, ADR 050: a start book with liquidation levels within 1-3 % of the price)
    recent_share: float = 0.0
    recent_entry_spread: float = 0.004
    #: order-book depth that absorbs forced orders, as a fraction of the symbol's OI
    depth_fraction: float = 0.02
    #: book_depth records (topic book_depth.v1): every depth_interval_s of sim time per venue and
    #: symbol, the resting USD within each band of the mid that the model's impact implies
    #: (connectors/simulator/depth.py), each side times exp(depth_noise x N(0, 1))
    depth_interval_s: float = 60.0
    depth_noise: float = 0.05
    #: share of an impact that fades out again (liquidity refills), and its e-folding time
    resilience: float = 0.35
    resilience_s: float = 1800.0
    #: how fast the idiosyncratic random flow mean-reverts (1/s); keeps presets near their path
    noise_reversion: float = 1 / 7200
    #: per-second rates at which leveraged positions are closed voluntarily / (re)opened,
    #: as fractions of the leveraged book (open rate 0 -> follows close rate: steady book)
    close_rate: float = 1 / (3 * 86400)
    open_rate: float | None = None
    #: trend-chasing: share of new positions going long moves with the last hour's return
    momentum: float = 2.0
    #: unleveraged OI change per second (fraction); negative = deleveraging of hedged OI
    passive_drift: float = 0.0
    #: funding per 8h = base + sensitivity * (long - short) / (long + short) of the leveraged book
    funding_base: float = 0.0001
    funding_sensitivity: float = 0.0006
    #: message cadence and density (the scale knobs)
    trades_per_second: float = 1.5
    oi_interval_s: float = 30.0
    mark_interval_s: float = 30.0
    #: a forced order is published once the pending liquidated USD of a
    #: venue/symbol/side reaches this size (aggregates the trader-level closes)
    min_liquidation_usd: float = 20_000.0
    #: ground-truth episode thresholds (see docs/simulator.md)
    episode_market_usd_per_min: float = 2_000_000.0
    episode_symbol_usd_per_min: float = 750_000.0
    episode_min_total_usd: float = 10_000_000.0
    episode_max_gap_min: int = 3
    #: reported targets this preset is calibrated to (checked by the tests)
    targets: dict = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return int(round(self.duration_s / self.step_s))

    @property
    def start_us(self) -> int:
        return int(self.start.timestamp() * 1_000_000)

    def with_overrides(self, **kw: object) -> Scenario:
        return replace(self, **kw)  # type: ignore[arg-type]


def _with(symbols: tuple[SymbolSpec, ...], **fields: dict[str, float]) -> tuple[SymbolSpec, ...]:
    """Per-symbol overrides of a preset: ``beta={"ETH": 1.1}``; key ``"*"`` = every other symbol."""
    out = []
    for s in symbols:
        kw = {}
        for name, by_base in fields.items():
            if s.base in by_base:
                kw[name] = by_base[s.base]
            elif "*" in by_base:
                kw[name] = by_base["*"]
        out.append(replace(s, **kw))
    return tuple(out)


def _t(y: int, mo: int, d: int, h: int = 0) -> datetime:
    return datetime(y, mo, d, h, tzinfo=UTC)


H = 3600.0


def _decoys(burst_h: tuple[float, float], price_h: float, grind_h: float, *, alt: str = "LINK", price_move: float = 0.03,
            other: str = "AVAX", burst_oi: tuple[float, float] = (0.007, 0.007),
            grind: float = -0.04) -> dict:
    """The decoys every preset family carries (docs/simulator.md, "Decoys"), at the given hours:
    two flat liquidation bursts absorbed by the book (``alt`` then ``other``), a fast price-only
    move up on ``alt`` (the short side of these long-crowded books is thin near price) and a
    slow 8 h grind down on ``other``. Times are chosen away from each preset's own shocks."""
    return {
        "bursts": (Burst(alt, burst_h[0] * H, burst_oi[0]), Burst(other, burst_h[1] * H, burst_oi[1])),
        "decoy_shocks": (
            Shock("price_only", price_h * H, 300.0, price_move, alt, "price-only move, little leverage near price (decoy)"),
            Shock("grind", grind_h * H, 8 * H, grind, other, "slow deleveraging grind (decoy)"),
        ),
    }


def _preset_a() -> Scenario:
    # Overnight purge: weeks of positive funding (crowded longs), a macro risk-off move
    # in the evening, a whale sell through $60k at night, then the cascade.
    d = _decoys((3.0, 23.5), 1.0, 15.0)
    return Scenario(
        name="A",
        summary="overnight leverage purge: BTC through $60k to ~$57.5k (-10%), >$750M longs liquidated in 24 h",
        start=_t(2026, 3, 9, 12),
        duration_s=86_400,
        long_share=0.68,
        entry_spread=0.025,
        feedback=0.2,
        margin_gap=0.035,
        # 0.0218 before the decoys; their ~$25M of absorbed bursts are part of the day's total
        leveraged_fraction=0.02117,
        symbols=_with(DEFAULT_SYMBOLS, crowding={"*": 0.8, "BTC": 1.0},
                      beta={"ETH": 1.06, "SOL": 1.5, "XRP": 1.2, "DOGE": 1.6, "BNB": 0.5, "AVAX": 1.3, "LINK": 1.2}),
        bursts=d["bursts"],
        shocks=d["decoy_shocks"] + (
            Shock("macro", 6 * H, 2 * H, -0.0172, "BTC", "risk-off macro headline"),
            Shock("whale_sell", 11 * H, 0.5 * H, -0.0172, "BTC", "whale market-sells through $60k"),
            Shock("flow", 15 * H, 3 * H, 0.004, "BTC", "dip buyers"),
        ),
        targets={
            "btc_low_return_pct": -10.0, "btc_low_usd": 57_500.0,
            "eth_low_return_max_pct": -12.0, "sol_low_return_max_pct": -15.0,
            "doge_low_return_max_pct": -15.0, "long_liquidations_usd": 800e6,
            "long_liquidations_min_usd": 750e6,
        },
    )


def _preset_b() -> Scenario:
    # A slow week: no single cascade, persistent de-risking (voluntary closes outpace
    # opens), drip of long liquidations. One week at 10 s resolution (60,480 steps)
    # keeps the default run small; --step-s 1 gives the full resolution.
    # losses scale with pre-crash risk exposure: B's betas are the week's, BNB barely moves
    syms = _with(DEFAULT_SYMBOLS, price={"BTC": 72_400.0},
                 beta={"ETH": 1.53, "SOL": 1.47, "XRP": 1.77, "DOGE": 1.8, "BNB": 0.12, "AVAX": 1.9, "LINK": 1.8})
    d = _decoys((24.0, 72.0), 48.0, 96.0, burst_oi=(0.02, 0.007))
    return Scenario(
        name="B",
        summary="slow deleveraging week: BTC to ~$67.6k, -1.13% on the last day, perp OI -4.4% in 24 h, BNB most resilient",
        start=_t(2026, 2, 2, 0),
        duration_s=7 * 86_400,
        step_s=10.0,
        symbols=syms,
        long_share=0.6,
        # "-4.4% in 24 h, about $26B of leveraged exposure removed" implies ~$590B of OI
        market_oi_usd=590e9,
        leveraged_fraction=0.0303,
        feedback=0.12,
        close_rate=1 / (2 * 86400),
        open_rate=0.97 / (2 * 86400),
        passive_drift=-0.028 / 86400,
        trades_per_second=0.5,
        oi_interval_s=60.0,
        mark_interval_s=60.0,
        bursts=d["bursts"],
        shocks=d["decoy_shocks"] + (
            Shock("macro", 0, 6 * 86_400, -0.0506, "BTC", "week-long risk-off drift"),
            Shock("macro", 6 * 86_400, 86_400, -0.0081, "BTC", "last day"),
        ),
        targets={
            "btc_return_24h_pct": -1.13, "eth_return_24h_pct": -1.98, "sol_return_24h_pct": -3.14,
            "xrp_return_24h_pct": -2.13, "bnb_return_24h_pct": -0.11, "btc_close_usd": 67_570.0,
            "btc_long_liquidations_24h_usd": 237e6, "btc_long_liquidations_week_usd": 2.16e9,
            "oi_change_24h_pct": -4.4,
        },
    )


def _preset_c() -> Scenario:
    d = _decoys((1.5, 21.0), 1.0, 12.0)
    return Scenario(
        name="C",
        summary="liquidation waterfall: ~$900M liquidated in 24 h, mostly longs, Binance largest, Hyperliquid heavy",
        start=_t(2026, 1, 19, 0),
        duration_s=86_400,
        long_share=0.66,
        feedback=0.2,
        margin_gap=0.035,
        leveraged_fraction=0.02478,  # 0.02544 before the decoys (see A)
        venues=(
            VenueSpec("binance-futures", 0.38, 0.40, 0.38, 15),
            VenueSpec("bybit", 0.24, 0.23, 0.22, 25),
            VenueSpec("okx", 0.18, 0.18, 0.14, 30),
            VenueSpec("hyperliquid", 0.20, 0.19, 0.26, 60),
        ),
        symbols=tuple(replace(s, crowding=s.crowding * (1.25 if s.base in ("XRP", "DOGE") else 1.0))
                      for s in DEFAULT_SYMBOLS),
        bursts=d["bursts"],
        shocks=d["decoy_shocks"] + (
            Shock("macro", 3 * H, 3 * H, -0.02, "BTC", "tariff headline, risk-off"),
            Shock("whale_sell", 8 * H, 0.75 * H, -0.02, "BTC", "large spot seller"),
            Shock("whale_sell", 8.2 * H, 0.5 * H, -0.02, "XRP", "XRP whale sell"),
        ),
        targets={"liquidations_usd": 900e6, "liquidations_min_usd": 828e6, "liquidations_max_usd": 974e6,
                 "long_share_min": 0.75},
    )


def _preset_d() -> Scenario:
    d = _decoys((1.5, 3.0), 1.0, 15.5)
    return Scenario(
        name="D",
        summary="plunge and short squeeze: BTC to ~$53k, $740M liquidated, then back above $57k within hours",
        start=_t(2026, 2, 5, 0),
        duration_s=86_400,
        symbols=tuple(replace(s, price=s.price * (59_000.0 / 63_900.0)) if s.base == "BTC" else s
                      for s in DEFAULT_SYMBOLS),
        long_share=0.6,
        feedback=0.2,
        margin_gap=0.035,
        # fast turnover and strong trend-chasing: shorts pile in after the plunge (squeeze fuel)
        momentum=8.0,
        close_rate=1 / (0.5 * 86400),
        leveraged_fraction=0.01756,  # 0.01832 before the decoys (see A)
        bursts=d["bursts"],
        shocks=d["decoy_shocks"] + (
            Shock("macro", 4 * H, 4 * H, -0.0288, "BTC", "ETF outflows, support at $58-60k breaks"),
            Shock("whale_sell", 9 * H, 0.5 * H, -0.024, "BTC", "capitulation seller"),
            Shock("whale_buy", 12 * H, 0.4 * H, 0.06, "BTC", "bid returns: squeeze trigger"),
        ),
        targets={"btc_low_usd": 53_000.0, "btc_rebound_above_usd": 57_000.0, "liquidations_usd": 740e6},
    )


def _preset_calm() -> Scenario:
    d = _decoys((3.0, 20.0), 1.0, 9.0, price_move=0.012)
    return Scenario(
        name="calm",
        summary="a quiet day: random flow only, no cascade",
        start=_t(2026, 4, 6, 0),
        duration_s=86_400,
        long_share=0.52,
        bursts=d["bursts"],
        shocks=d["decoy_shocks"],
        targets={"cascades": 0},
    )


#: leverage mixes over model.LEVERAGES (2, 3, 5, 7, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100 x) that a
#: preset takes as ``leverage_weights=`` (scored in docs/analytics.md, "Leverage mixes"). The liquidation
#: map's prior (AnalyticsConfig: 3-100x, mass at 5-20x, mean ~17x) sits near ``default``; ``high``
#: has most of its book at 40-100x (mean 57x), ``low`` at 2-7x (mean 7x).
LEVERAGE_MIXES: dict[str, tuple[float, ...] | None] = {
    "default": None,
    "low": (14, 20, 24, 16, 10, 5, 4, 3, 2, 1, 0.5, 0.3, 0.1, 0.1),
    "high": (0, 0, 0.5, 0.5, 1, 1, 2, 3, 5, 7.5, 15, 25, 22, 17.5),
}

#: variants of a preset's initial book (overrides a run takes with ``book=`` in the liquidation map's
#: scoring, ADR 050). ``gapped`` = the preset as it is: no level within ``margin_gap`` (1.5 % calm,
#: 3.5 % A/C/D) of the start price. ``near`` = a book after a quiet period: the price ranged within
#: 0.75 % of the start, so only levels that close are gone, and 30 % of the book was opened during that
#: period (entries 0.4 % std around the start price): levels from 0.75 % on, the nearest from 30-75x.
INITIAL_BOOKS: dict[str, dict[str, float]] = {
    "gapped": {},
    "near": {"margin_gap": 0.0075, "recent_share": 0.3, "recent_entry_spread": 0.004},
}

PRESETS: dict[str, Scenario] = {s.name: s for s in (_preset_a(), _preset_b(), _preset_c(), _preset_d(), _preset_calm())}


def get_scenario(name: str) -> Scenario:
    key = name if name in PRESETS else name.upper() if name.upper() in PRESETS else name.lower()
    try:
        return PRESETS[key]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(PRESETS)}") from None

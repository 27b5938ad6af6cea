-- liqstream analytics marts, filled by pipelines/transforms (see docs/analytics.md for every
-- column's definition and threshold). Times are UTC (the session runs with TimeZone = 'UTC').
-- USD sums are exact: accumulated as integer micro-USD, stored as DECIMAL(24, 6).

-- grain: one row per exchange, venue symbol and UTC minute (event time). key: (exchange, symbol, minute_ts)
CREATE TABLE IF NOT EXISTS bars_1m (
    minute_ts           TIMESTAMPTZ NOT NULL,   -- window start
    exchange            VARCHAR NOT NULL,
    symbol              VARCHAR NOT NULL,       -- the venue's own symbol
    base                VARCHAR NOT NULL,
    quote               VARCHAR NOT NULL,
    kind                VARCHAR NOT NULL,       -- perpetual | future | spot | option
    open                DOUBLE,                 -- first trade by (event_time, price); null: no trades
    high                DOUBLE,
    low                 DOUBLE,
    close               DOUBLE,                 -- last trade by (event_time, price)
    first_trade_ts      TIMESTAMPTZ,
    last_trade_ts       TIMESTAMPTZ,
    volume_base         DOUBLE NOT NULL,
    volume_usd          DECIMAL(24, 6) NOT NULL,
    trade_count         BIGINT NOT NULL,
    taker_buy_usd       DECIMAL(24, 6) NOT NULL,
    taker_sell_usd      DECIMAL(24, 6) NOT NULL,
    long_liq_count      BIGINT NOT NULL,        -- long positions force-closed
    long_liq_usd        DECIMAL(24, 6) NOT NULL,
    short_liq_count     BIGINT NOT NULL,
    short_liq_usd       DECIMAL(24, 6) NOT NULL,
    max_liq_usd         DECIMAL(24, 6),
    oi_first            DOUBLE,                 -- open interest, base units, first snapshot
    oi_last             DOUBLE,
    oi_first_usd        DOUBLE,                 -- venue's USD value, else oi x close (else x mark)
    oi_last_usd         DOUBLE,
    oi_first_ts         TIMESTAMPTZ,
    oi_last_ts          TIMESTAMPTZ,
    funding_rate_last   DOUBLE,
    mark_price_last     DOUBLE,
    index_price_last    DOUBLE,
    funding_ts          TIMESTAMPTZ,
    liquidation_events  BIGINT NOT NULL,
    oi_events           BIGINT NOT NULL,
    funding_events      BIGINT NOT NULL,
    PRIMARY KEY (exchange, symbol, minute_ts)
);

-- grain: one row per base asset and UTC minute, perpetuals aggregated across venues. key: (base, minute_ts)
CREATE TABLE IF NOT EXISTS bars_1m_symbol (
    minute_ts        TIMESTAMPTZ NOT NULL,
    base             VARCHAR NOT NULL,
    venues           INTEGER NOT NULL,          -- venue symbols with a bar in the minute
    reference_venue  VARCHAR,                   -- exchange:symbol whose close is `price`
    price            DOUBLE,                    -- reference close, carried forward; else VWAP
    price_vwap       DOUBLE,
    high             DOUBLE,
    low              DOUBLE,
    volume_base      DOUBLE NOT NULL,
    volume_usd       DECIMAL(24, 6) NOT NULL,
    trade_count      BIGINT NOT NULL,
    taker_buy_usd    DECIMAL(24, 6) NOT NULL,
    taker_sell_usd   DECIMAL(24, 6) NOT NULL,
    long_liq_count   BIGINT NOT NULL,
    long_liq_usd     DECIMAL(24, 6) NOT NULL,
    short_liq_count  BIGINT NOT NULL,
    short_liq_usd    DECIMAL(24, 6) NOT NULL,
    max_liq_usd      DECIMAL(24, 6) NOT NULL,
    oi_usd           DOUBLE,                    -- sum of each venue's last OI (carried <= ffill_max_minutes)
    oi_base          DOUBLE,
    oi_venues        INTEGER NOT NULL,
    funding_rate     DOUBLE,                    -- OI-weighted mean of the venues' last rates
    PRIMARY KEY (base, minute_ts)
);

-- grain: one row per cascade episode (scope x direction x start minute). key: episode_id
CREATE TABLE IF NOT EXISTS cascades (
    episode_id           VARCHAR PRIMARY KEY,   -- sha1(scope|direction|start micros)[:16], stable across re-runs
    scope                VARCHAR NOT NULL,      -- base asset (BTC) or 'market'
    direction            VARCHAR NOT NULL,      -- long_liquidation | short_squeeze
    status               VARCHAR NOT NULL,      -- open | closed
    start_ts             TIMESTAMPTZ NOT NULL,
    detected_ts          TIMESTAMPTZ NOT NULL,  -- close of the minute the run reached the threshold
    peak_ts              TIMESTAMPTZ NOT NULL,
    end_ts               TIMESTAMPTZ NOT NULL,  -- exclusive: close of the last active minute
    closed_ts            TIMESTAMPTZ,           -- when the quiet gap confirmed the end
    duration_minutes     INTEGER NOT NULL,
    long_liq_usd         DECIMAL(24, 6) NOT NULL,
    short_liq_usd        DECIMAL(24, 6) NOT NULL,
    liq_count            BIGINT NOT NULL,
    peak_minute_liq_usd  DOUBLE NOT NULL,
    price_start          DOUBLE,
    price_extreme        DOUBLE,                -- low (long cascade) / high (short squeeze)
    price_end            DOUBLE,
    drawdown_pct         DOUBLE,                -- (extreme / start - 1) x 100
    oi_start_usd         DOUBLE,
    oi_end_usd           DOUBLE,
    oi_change_usd        DOUBLE,
    oi_change_pct        DOUBLE,
    venue_share          JSON,                  -- {exchange: share of the side's liquidated USD}
    threshold_usd        DOUBLE NOT NULL,       -- episode threshold: max(floor, episode_oi_bp of OI)
    severity             DOUBLE NOT NULL,       -- side liquidated USD / threshold_usd
    severity_level       INTEGER NOT NULL,      -- severity_tiers crossed (x threshold_usd)
    feedback             DOUBLE                 -- branching ratio of liquidation -> price -> liquidation
);

-- grain: one row per episode and severity level reached (start, then each escalation). key: (episode_id, severity_level)
CREATE TABLE IF NOT EXISTS cascade_alerts (
    episode_id        VARCHAR NOT NULL,
    severity_level    INTEGER NOT NULL,
    alert_type        VARCHAR NOT NULL,         -- start | escalation
    scope             VARCHAR NOT NULL,
    direction         VARCHAR NOT NULL,
    alert_ts          TIMESTAMPTZ NOT NULL,     -- event time of the alert (close of minute_ts)
    minute_ts         TIMESTAMPTZ NOT NULL,
    start_ts          TIMESTAMPTZ NOT NULL,
    liq_usd           DOUBLE NOT NULL,          -- side liquidated USD since start
    minute_liq_usd    DOUBLE NOT NULL,          -- side liquidated USD in minute_ts
    threshold_usd     DOUBLE NOT NULL,
    price_move_pct    DOUBLE,
    severity          DOUBLE NOT NULL,
    PRIMARY KEY (episode_id, severity_level)
);

-- grain: one row per level, exchange, symbol, as-of minute and span. key: (level, exchange, symbol, as_of_ts, span)
-- level venue: one venue symbol; symbol: exchange = 'all', symbol = base; market: exchange = 'all', symbol = 'market'
CREATE TABLE IF NOT EXISTS oi_deltas (
    level             VARCHAR NOT NULL,
    exchange          VARCHAR NOT NULL,
    symbol            VARCHAR NOT NULL,
    base              VARCHAR NOT NULL,
    as_of_ts          TIMESTAMPTZ NOT NULL,
    span              VARCHAR NOT NULL,         -- 1h | 4h | 24h | 7d | 30d
    span_minutes      INTEGER NOT NULL,
    oi_start_usd      DOUBLE NOT NULL,
    oi_end_usd        DOUBLE NOT NULL,
    oi_change_usd     DOUBLE NOT NULL,
    oi_change_pct     DOUBLE NOT NULL,
    oi_start_base     DOUBLE,
    oi_end_base       DOUBLE,
    price_start       DOUBLE,
    price_end         DOUBLE,
    price_change_pct  DOUBLE,
    regime            VARCHAR NOT NULL,         -- deleveraging | short_squeeze | leverage_buildup | flat
    PRIMARY KEY (level, exchange, symbol, as_of_ts, span)
);

-- grain: one row per altcoin (base), as-of minute and trailing window. key: (base, as_of_ts, window_minutes)
CREATE TABLE IF NOT EXISTS contagion (
    base                   VARCHAR NOT NULL,
    as_of_ts               TIMESTAMPTZ NOT NULL,
    window_minutes         INTEGER NOT NULL,
    beta                   DOUBLE NOT NULL,     -- to BTC, minute log returns
    correlation            DOUBLE,
    n_returns              INTEGER NOT NULL,
    btc_dominance_oi       DOUBLE NOT NULL,
    btc_dominance_volume   DOUBLE,
    dominance              DOUBLE NOT NULL,
    oi_usd                 DOUBLE NOT NULL,
    volume_usd             DOUBLE NOT NULL,     -- in the window
    leverage               DOUBLE,              -- OI / (mean minute volume x 1440)
    leverage_rel_btc       DOUBLE,
    funding_rate_mean      DOUBLE,
    liq_usd                DOUBLE NOT NULL,
    liq_intensity_pct      DOUBLE,
    exposure               DOUBLE NOT NULL,
    contagion_score        DOUBLE NOT NULL,
    btc_move_pct           DOUBLE,
    move_pct               DOUBLE,
    expected_move_pct      DOUBLE,              -- beta x BTC move
    contagion_impulse_pct  DOUBLE,              -- score x BTC move
    rank                   INTEGER NOT NULL,    -- 1 = most exposed altcoin at as_of_ts
    PRIMARY KEY (base, as_of_ts, window_minutes)
);

-- grain: one row per event older than (watermark - allowed lateness) when it arrived. key: (event_type, event_key)
CREATE TABLE IF NOT EXISTS late_events (
    event_type    VARCHAR NOT NULL,
    event_key     VARCHAR NOT NULL,             -- sha1 of the normalized record
    exchange      VARCHAR,
    symbol        VARCHAR,
    event_ts      TIMESTAMPTZ NOT NULL,
    ingest_ts     TIMESTAMPTZ,
    watermark_ts  TIMESTAMPTZ NOT NULL,
    lateness_s    DOUBLE NOT NULL,              -- watermark - event time
    notional_usd  DOUBLE,
    record_json   JSON NOT NULL,
    PRIMARY KEY (event_type, event_key)
);

-- The liquidation map (issue 22, ADR 015): estimated liquidation levels from public data.

-- grain: one row per snapshot (as_of_ts, every liqmap_every_minutes), base, scope, side and price
-- bucket holding estimated exposure, within liqmap_range_pct of the price.
-- scope: exchange/symbol of one perpetual venue symbol, or exchange = 'all', symbol = base (every venue)
-- key: (base, exchange, symbol, as_of_ts, side, price_low)
CREATE TABLE IF NOT EXISTS liquidation_levels (
    as_of_ts      TIMESTAMPTZ NOT NULL,
    base          VARCHAR NOT NULL,
    exchange      VARCHAR NOT NULL,
    symbol        VARCHAR NOT NULL,
    side          VARCHAR NOT NULL,   -- long | short: the side that would be force-closed
    price_low     DOUBLE NOT NULL,    -- the log-price bucket's bounds
    price_high    DOUBLE NOT NULL,
    usd           DOUBLE NOT NULL,    -- estimated USD force-closed in the bucket (base units x mid)
    price         DOUBLE NOT NULL,    -- the base's price at as_of_ts
    distance_pct  DOUBLE NOT NULL,    -- (price_low / price - 1) x 100
    PRIMARY KEY (base, exchange, symbol, as_of_ts, side, price_low)
);

-- grain: one row per base and minute (every venue of the base). key: (base, minute_ts)
-- USD within 1/2/5 % of the price (longs below, shorts above) and the nearest cluster each way
CREATE TABLE IF NOT EXISTS liquidation_fuel (
    minute_ts                    TIMESTAMPTZ NOT NULL,
    base                         VARCHAR NOT NULL,
    price                        DOUBLE NOT NULL,
    vol_1h_pct                   DOUBLE,
    long_usd_1pct                DOUBLE NOT NULL,
    long_usd_2pct                DOUBLE NOT NULL,
    long_usd_5pct                DOUBLE NOT NULL,
    long_cluster_price           DOUBLE,
    long_cluster_usd             DOUBLE,
    long_cluster_distance_pct    DOUBLE,
    long_cluster_distance_vol    DOUBLE,
    short_usd_1pct               DOUBLE NOT NULL,
    short_usd_2pct               DOUBLE NOT NULL,
    short_usd_5pct               DOUBLE NOT NULL,
    short_cluster_price          DOUBLE,
    short_cluster_usd            DOUBLE,
    short_cluster_distance_pct   DOUBLE,
    short_cluster_distance_vol   DOUBLE,
    PRIMARY KEY (base, minute_ts)
);

-- The estimator's books after the last settled minute (ADR 015): what the next cycle continues from.
-- grain: one row per base and venue symbol; written in the same transaction as the marts (exactly once).
-- key: (base, exchange, symbol). Not an analyst table: the book is float64 bytes (2 sides x tiers x grid_nb).
CREATE TABLE IF NOT EXISTS liquidation_map_state (
    base            VARCHAR NOT NULL,
    exchange        VARCHAR NOT NULL,
    symbol          VARCHAR NOT NULL,
    last_minute_us  BIGINT NOT NULL,   -- the last minute stepped (the same for every venue of a base)
    bucket_bp       DOUBLE NOT NULL,   -- the grid: bucket b = log price [(grid_lo + b) w, (grid_lo + b + 1) w)
    grid_lo         BIGINT NOT NULL,
    grid_nb         INTEGER NOT NULL,
    tiers           DOUBLE[] NOT NULL, -- leverage tiers and the venue's calibrated mix over them
    mmr             DOUBLE NOT NULL,
    weights         DOUBLE[] NOT NULL,
    scale           DOUBLE NOT NULL,   -- book = store x scale (pro-rata closes multiply it)
    last_oi         DOUBLE,            -- the venue's last OI (base units), NULL before its first
    book            BLOB NOT NULL,     -- store, little-endian float64, C order (side, tier, bucket)
    PRIMARY KEY (base, exchange, symbol)
);

-- Cascade context (issue 22): the fuel each episode started with, in its direction (longs below for a
-- long_liquidation, shorts above for a short_squeeze), from liquidation_fuel of the minute before its
-- start (the market: summed over bases), and the share of it consumed (its side's liquidated USD /
-- fuel within 5 %; > 1 when more was liquidated than the map held). Filled by the job after each upsert.
ALTER TABLE cascades ADD COLUMN IF NOT EXISTS fuel_1pct_usd DOUBLE;
ALTER TABLE cascades ADD COLUMN IF NOT EXISTS fuel_2pct_usd DOUBLE;
ALTER TABLE cascades ADD COLUMN IF NOT EXISTS fuel_5pct_usd DOUBLE;
ALTER TABLE cascades ADD COLUMN IF NOT EXISTS fuel_consumed_share DOUBLE;

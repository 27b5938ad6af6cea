-- Open-minute cascade watches of the stream job (ADR 018, pipelines/alerts/watch.py). Kept apart from
-- cascades / cascade_alerts, which hold what the complete minutes say (a backfill writes the same):
-- a watch comes from a partial bar and is confirmed or withdrawn when its minute closes.

-- grain: one row per episode watched from an open minute. key: episode_id
CREATE TABLE IF NOT EXISTS cascade_watches (
    episode_id        VARCHAR PRIMARY KEY,
    scope             VARCHAR NOT NULL,
    direction         VARCHAR NOT NULL,
    state             VARCHAR NOT NULL,         -- watch | confirmed | withdrawn
    minute_ts         TIMESTAMPTZ NOT NULL,     -- the open minute whose partial bars met the cascade test
    start_ts          TIMESTAMPTZ NOT NULL,     -- the run's first hot minute
    seen_ts           TIMESTAMPTZ NOT NULL,     -- event time the job had reached (its watermark), inside minute_ts
    level             INTEGER NOT NULL,         -- the cascade level those partial bars reached
    liq_usd           DOUBLE NOT NULL,          -- side liquidated USD from start_ts to seen_ts
    minute_liq_usd    DOUBLE NOT NULL,          -- of it, in minute_ts
    threshold_usd     DOUBLE NOT NULL,
    price_move_pct    DOUBLE,
    severity          DOUBLE NOT NULL,
    watch_run_id      VARCHAR NOT NULL,         -- the cycle that committed the watch
    watched_at        TIMESTAMPTZ NOT NULL,     -- wall clock of that commit
    resolved_ts       TIMESTAMPTZ,              -- close of minute_ts, once confirmed or withdrawn
    resolved_run_id   VARCHAR,
    resolved_at       TIMESTAMPTZ,              -- wall clock of the resolving commit
    confirmed_level   INTEGER                   -- the detector's cascade level that confirmed it
);

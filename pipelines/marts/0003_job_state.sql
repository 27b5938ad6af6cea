-- grain: one row per named job-state value. key: name
-- watermark_us: max event time committed to bars_1m (events older than it minus the allowed
--   lateness go to late_events); analytics_from_us: first bar minute whose analytics are not yet
--   recomputed (set with the bars in one transaction, cleared when the analytics commit).
CREATE TABLE IF NOT EXISTS job_state (
    name        VARCHAR PRIMARY KEY,
    value_us    BIGINT,
    updated_at  TIMESTAMPTZ NOT NULL
);

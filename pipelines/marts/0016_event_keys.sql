-- Replayed events (pipelines/dedupe.py, ADR 016). Numbered after the ADR so that migrations added in
-- parallel by other work keep distinct versions.

-- grain: one row per event counted in the marts whose event time lies within the dedupe horizon
-- (JobSettings.dedupe_horizon_s) of the watermark. key: key (first 64 bits of the md5 of the event's identity).
-- Written in the transaction that commits the marts and offsets; no index (the cycle anti-joins a
-- Parquet export of it, and an ART index over millions of keys costs more than it saves).
CREATE TABLE IF NOT EXISTS event_keys (
    key            UBIGINT NOT NULL,
    event_time_us  BIGINT NOT NULL
);
